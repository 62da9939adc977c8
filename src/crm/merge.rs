//! The per-field merge policy: given what a lead holds and what a delivery
//! brings, decide what changes. Pure: storage applies the returned plan.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::config::{ContactPolicy, DescriptionPolicy, FieldPolicy, MergePolicy, Primary};

/// Emails or phones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactKind {
    /// An email address.
    Email,
    /// A phone number.
    Phone,
}

impl ContactKind {
    /// The history field name.
    pub fn as_str(self) -> &'static str {
        match self {
            ContactKind::Email => "email",
            ContactKind::Phone => "phone",
        }
    }
}

/// One email or phone a lead holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// The normalised value (identity key).
    pub value: String,
    /// The value as first received.
    pub raw: String,
    /// Whether this is the lead's primary one.
    pub primary: bool,
}

/// What a lead holds now, as far as the policy cares.
#[derive(Debug, Clone, Default)]
pub struct Current {
    /// The name, if any.
    pub name: Option<String>,
    /// The description, if any.
    pub description: Option<String>,
    /// Emails.
    pub emails: Vec<Contact>,
    /// Phones.
    pub phones: Vec<Contact>,
}

/// A contact value the delivery brings that no other lead owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingContact {
    /// Normalised.
    pub value: String,
    /// As received.
    pub raw: String,
}

/// What the delivery brings, already stripped of values owned by other leads.
#[derive(Debug, Clone, Default)]
pub struct Incoming {
    /// Name, if non-empty.
    pub name: Option<String>,
    /// Description, if non-empty.
    pub description: Option<String>,
    /// Emails in the order given.
    pub emails: Vec<IncomingContact>,
    /// Phones in the order given.
    pub phones: Vec<IncomingContact>,
}

/// One decided change, with the rule that decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// The name changes from `old` to `new`.
    Name {
        /// Previous value.
        old: Option<String>,
        /// New value.
        new: String,
        /// Why.
        rule: Cow<'static, str>,
    },
    /// The description changes.
    Description {
        /// Previous value.
        old: Option<String>,
        /// New value.
        new: String,
        /// Why.
        rule: Cow<'static, str>,
    },
    /// A contact is added.
    Add {
        /// Email or phone.
        kind: ContactKind,
        /// Normalised value.
        value: String,
        /// As received.
        raw: String,
        /// Whether it becomes primary (the previous primary, if any, is demoted).
        primary: bool,
        /// Why.
        rule: Cow<'static, str>,
    },
    /// A contact is removed (replaced under `take_incoming`).
    Remove {
        /// Email or phone.
        kind: ContactKind,
        /// Normalised value.
        value: String,
        /// Why.
        rule: Cow<'static, str>,
    },
    /// A contact the lead already holds becomes primary.
    MakePrimary {
        /// Email or phone.
        kind: ContactKind,
        /// Normalised value.
        value: String,
        /// The primary it replaces.
        old: Option<String>,
        /// Why.
        rule: Cow<'static, str>,
    },
    /// An incoming value that was not taken.
    Kept {
        /// Which field.
        field: Cow<'static, str>,
        /// The value that was not taken.
        incoming: String,
        /// Why.
        rule: Cow<'static, str>,
    },
}

impl Change {
    /// Whether the change alters the lead (as opposed to recording a refusal).
    pub fn alters(&self) -> bool {
        !matches!(self, Change::Kept { .. })
    }
}

/// The fields of a lead that staff set, each with who set it (`staff
/// NAME`): under `take_incoming` a delivery does not replace them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pins {
    /// Who pinned the name.
    pub name: Option<String>,
    /// Who pinned the description.
    pub description: Option<String>,
    /// Who pinned the emails.
    pub email: Option<String>,
    /// Who pinned the phones.
    pub phone: Option<String>,
}

impl Pins {
    /// Whether nothing is pinned.
    pub fn is_empty(&self) -> bool {
        *self == Pins::default()
    }

    /// Records that `field` (`name`, `description`, `email`, `phone`) was
    /// pinned by `by`; other fields are ignored.
    pub fn set(&mut self, field: &str, by: String) {
        match field {
            "name" => self.name = Some(by),
            "description" => self.description = Some(by),
            "email" => self.email = Some(by),
            "phone" => self.phone = Some(by),
            _ => {}
        }
    }

    fn contact(&self, kind: ContactKind) -> Option<&str> {
        match kind {
            ContactKind::Email => self.email.as_deref(),
            ContactKind::Phone => self.phone.as_deref(),
        }
    }
}

/// The rule of a value not taken because staff pinned the field.
fn pinned(field: &str, by: &str) -> Cow<'static, str> {
    Cow::Owned(format!("{field} pinned by {by}"))
}

/// Decides every change the policy makes to `current` for `incoming`.
pub fn plan(policy: &MergePolicy, current: &Current, incoming: &Incoming) -> Vec<Change> {
    plan_pinned(policy, current, incoming, &Pins::default())
}

/// Whether a plan replaces a value the lead holds (`take_incoming`): only
/// then can a pin matter, so only then are the lead's pins read.
pub fn replaces(policy: &MergePolicy, changes: &[Change]) -> bool {
    changes.iter().any(|c| match c {
        Change::Name { old, .. } => old.is_some(),
        Change::Description { old, .. } => {
            old.is_some() && policy.description == DescriptionPolicy::TakeIncoming
        }
        Change::Remove { .. } => true,
        Change::MakePrimary { kind, .. } => {
            let policy = match kind {
                ContactKind::Email => policy.email,
                ContactKind::Phone => policy.phone,
            };
            policy == ContactPolicy::TakeIncoming
        }
        Change::Add { .. } | Change::Kept { .. } => false,
    })
}

/// [`plan`] for a lead whose `pins` staff set: a pinned field is not
/// replaced under `take_incoming`; the incoming value is recorded as not
/// taken, with who pinned the field. Every other decision is the policy's.
pub fn plan_pinned(
    policy: &MergePolicy,
    current: &Current,
    incoming: &Incoming,
    pins: &Pins,
) -> Vec<Change> {
    let mut changes = Vec::new();
    plan_name(
        policy.name,
        pins.name.as_deref(),
        current,
        incoming,
        &mut changes,
    );
    plan_description(
        policy.description,
        pins.description.as_deref(),
        current,
        incoming,
        &mut changes,
    );
    for (kind, policy_of, held, given) in [
        (
            ContactKind::Email,
            policy.email,
            &current.emails,
            &incoming.emails,
        ),
        (
            ContactKind::Phone,
            policy.phone,
            &current.phones,
            &incoming.phones,
        ),
    ] {
        plan_contacts(
            Slot {
                kind,
                policy: policy_of,
                primary: policy.primary,
                pinned_by: pins.contact(kind),
            },
            held,
            given,
            &mut changes,
        );
    }
    changes
}

fn plan_name(
    policy: FieldPolicy,
    pinned_by: Option<&str>,
    current: &Current,
    incoming: &Incoming,
    out: &mut Vec<Change>,
) {
    let Some(new) = incoming.name.as_deref() else {
        return;
    };
    match current.name.as_deref() {
        None => out.push(Change::Name {
            old: None,
            new: new.to_owned(),
            rule: "empty field filled".into(),
        }),
        Some(old) if old == new => {}
        Some(old) => match policy {
            FieldPolicy::KeepExisting => out.push(Change::Kept {
                field: "name".into(),
                incoming: new.to_owned(),
                rule: "name = keep_existing".into(),
            }),
            FieldPolicy::TakeIncoming if let Some(by) = pinned_by => out.push(Change::Kept {
                field: "name".into(),
                incoming: new.to_owned(),
                rule: pinned("name", by),
            }),
            FieldPolicy::TakeIncoming => out.push(Change::Name {
                old: Some(old.to_owned()),
                new: new.to_owned(),
                rule: "name = take_incoming".into(),
            }),
        },
    }
}

fn plan_description(
    policy: DescriptionPolicy,
    pinned_by: Option<&str>,
    current: &Current,
    incoming: &Incoming,
    out: &mut Vec<Change>,
) {
    let Some(new) = incoming.description.as_deref() else {
        return;
    };
    match current.description.as_deref() {
        None => out.push(Change::Description {
            old: None,
            new: new.to_owned(),
            rule: "empty field filled".into(),
        }),
        Some(old) if old == new => {}
        Some(old) => match policy {
            DescriptionPolicy::KeepExisting => out.push(Change::Kept {
                field: "description".into(),
                incoming: new.to_owned(),
                rule: "description = keep_existing".into(),
            }),
            DescriptionPolicy::TakeIncoming if let Some(by) = pinned_by => out.push(Change::Kept {
                field: "description".into(),
                incoming: new.to_owned(),
                rule: pinned("description", by),
            }),
            DescriptionPolicy::TakeIncoming => out.push(Change::Description {
                old: Some(old.to_owned()),
                new: new.to_owned(),
                rule: "description = take_incoming".into(),
            }),
            DescriptionPolicy::Append if old.lines().any(|l| l == new) => {}
            DescriptionPolicy::Append => out.push(Change::Description {
                old: Some(old.to_owned()),
                new: format!("{old}\n{new}"),
                rule: "description = append".into(),
            }),
        },
    }
}

/// One kind of contact and the rules for it.
struct Slot<'a> {
    kind: ContactKind,
    policy: ContactPolicy,
    primary: Primary,
    /// Who pinned this kind of contact, if staff did.
    pinned_by: Option<&'a str>,
}

/// The policy for one kind of contact. The first incoming value is "the"
/// value the policy speaks of; any further ones (platforms that send lists)
/// are only ever added as secondary, never replace, and are dropped under
/// `keep_existing`. A pinned kind is never replaced: what `take_incoming`
/// would have replaced it with is not taken.
fn plan_contacts(
    slot: Slot<'_>,
    current: &[Contact],
    incoming: &[IncomingContact],
    out: &mut Vec<Change>,
) {
    let Slot {
        kind,
        policy,
        primary,
        pinned_by,
    } = slot;
    let not_taken = |inc: &IncomingContact, by: &str| Change::Kept {
        field: kind.as_str().into(),
        incoming: inc.raw.clone(),
        rule: pinned(kind.as_str(), by),
    };
    // A working copy so later values see the effect of earlier ones.
    let mut held: Vec<Contact> = current.to_vec();
    for (i, inc) in incoming.iter().enumerate() {
        let first = i == 0;
        let current_primary = held.iter().find(|c| c.primary).map(|c| c.value.clone());
        if let Some(existing) = held.iter().find(|c| c.value == inc.value) {
            // Already on the lead: at most a change of primary.
            let promote = first
                && !existing.primary
                && (policy == ContactPolicy::TakeIncoming
                    || (policy == ContactPolicy::KeepBoth && primary == Primary::Incoming));
            if promote
                && policy == ContactPolicy::TakeIncoming
                && let Some(by) = pinned_by
            {
                out.push(not_taken(inc, by));
            } else if promote {
                if policy == ContactPolicy::TakeIncoming
                    && let Some(old) = &current_primary
                {
                    out.push(Change::Remove {
                        kind,
                        value: old.clone(),
                        rule: rule(kind, "take_incoming").into(),
                    });
                    held.retain(|c| &c.value != old);
                }
                out.push(Change::MakePrimary {
                    kind,
                    value: inc.value.clone(),
                    old: current_primary,
                    rule: Cow::Borrowed(if policy == ContactPolicy::TakeIncoming {
                        rule(kind, "take_incoming")
                    } else {
                        "keep_both, primary = incoming"
                    }),
                });
                for c in &mut held {
                    c.primary = c.value == inc.value;
                }
            }
            continue;
        }
        if held.is_empty() {
            out.push(Change::Add {
                kind,
                value: inc.value.clone(),
                raw: inc.raw.clone(),
                primary: true,
                rule: "empty field filled".into(),
            });
            held.push(Contact {
                value: inc.value.clone(),
                raw: inc.raw.clone(),
                primary: true,
            });
            continue;
        }
        let effective = if first {
            policy
        } else {
            secondary_policy(policy)
        };
        match effective {
            ContactPolicy::KeepExisting => out.push(Change::Kept {
                field: kind.as_str().into(),
                incoming: inc.raw.clone(),
                rule: rule(kind, "keep_existing").into(),
            }),
            ContactPolicy::TakeIncoming if let Some(by) = pinned_by => {
                out.push(not_taken(inc, by));
            }
            ContactPolicy::TakeIncoming => {
                if let Some(old) = &current_primary {
                    out.push(Change::Remove {
                        kind,
                        value: old.clone(),
                        rule: rule(kind, "take_incoming").into(),
                    });
                    held.retain(|c| &c.value != old);
                }
                out.push(Change::Add {
                    kind,
                    value: inc.value.clone(),
                    raw: inc.raw.clone(),
                    primary: true,
                    rule: rule(kind, "take_incoming").into(),
                });
                for c in &mut held {
                    c.primary = false;
                }
                held.push(Contact {
                    value: inc.value.clone(),
                    raw: inc.raw.clone(),
                    primary: true,
                });
            }
            ContactPolicy::KeepBoth => {
                let make_primary = first && primary == Primary::Incoming;
                out.push(Change::Add {
                    kind,
                    value: inc.value.clone(),
                    raw: inc.raw.clone(),
                    primary: make_primary,
                    rule: Cow::Borrowed(if !first {
                        "further value added as secondary"
                    } else if make_primary {
                        "keep_both, primary = incoming"
                    } else {
                        "keep_both, primary = existing"
                    }),
                });
                if make_primary {
                    for c in &mut held {
                        c.primary = false;
                    }
                }
                held.push(Contact {
                    value: inc.value.clone(),
                    raw: inc.raw.clone(),
                    primary: make_primary,
                });
            }
        }
    }
}

fn secondary_policy(policy: ContactPolicy) -> ContactPolicy {
    match policy {
        ContactPolicy::KeepExisting => ContactPolicy::KeepExisting,
        _ => ContactPolicy::KeepBoth,
    }
}

fn rule(kind: ContactKind, policy: &'static str) -> &'static str {
    match (kind, policy) {
        (ContactKind::Email, "keep_existing") => "email = keep_existing",
        (ContactKind::Email, "take_incoming") => "email = take_incoming",
        (ContactKind::Phone, "keep_existing") => "phone = keep_existing",
        (ContactKind::Phone, "take_incoming") => "phone = take_incoming",
        _ => policy,
    }
}

/// Applies a plan to a snapshot: what the lead looks like afterwards.
/// Storage does the same in SQL; this is the reference the tests compare with.
pub fn preview(current: &Current, changes: &[Change]) -> Current {
    let mut next = current.clone();
    for change in changes {
        match change {
            Change::Name { new, .. } => next.name = Some(new.clone()),
            Change::Description { new, .. } => next.description = Some(new.clone()),
            Change::Add {
                kind,
                value,
                raw,
                primary,
                ..
            } => {
                let list = contacts_mut(&mut next, *kind);
                if *primary {
                    list.iter_mut().for_each(|c| c.primary = false);
                }
                list.push(Contact {
                    value: value.clone(),
                    raw: raw.clone(),
                    primary: *primary,
                });
            }
            Change::Remove { kind, value, .. } => {
                contacts_mut(&mut next, *kind).retain(|c| &c.value != value)
            }
            Change::MakePrimary { kind, value, .. } => contacts_mut(&mut next, *kind)
                .iter_mut()
                .for_each(|c| c.primary = &c.value == value),
            Change::Kept { .. } => {}
        }
    }
    next
}

fn contacts_mut(lead: &mut Current, kind: ContactKind) -> &mut Vec<Contact> {
    match kind {
        ContactKind::Email => &mut lead.emails,
        ContactKind::Phone => &mut lead.phones,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Identifier;

    fn policy(phone: ContactPolicy, primary: Primary) -> MergePolicy {
        MergePolicy {
            match_order: vec![Identifier::Email, Identifier::Phone],
            default_region: phonenumber::country::Id::US,
            phone,
            email: phone,
            primary,
            name: FieldPolicy::KeepExisting,
            description: DescriptionPolicy::KeepExisting,
        }
    }

    fn contact(v: &str, primary: bool) -> Contact {
        Contact {
            value: v.into(),
            raw: v.into(),
            primary,
        }
    }

    fn inc(v: &str) -> IncomingContact {
        IncomingContact {
            value: v.into(),
            raw: v.into(),
        }
    }

    /// The seed scenario: lead holds email A + phone C, chat brings A + B.
    fn seed(p: &MergePolicy) -> Current {
        let current = Current {
            name: Some("John".into()),
            description: None,
            emails: vec![contact("a@x.io", true)],
            phones: vec![contact("+1C", true)],
        };
        let incoming = Incoming {
            emails: vec![inc("a@x.io")],
            phones: vec![inc("+1B")],
            ..Default::default()
        };
        preview(&current, &plan(p, &current, &incoming))
    }

    fn phones(c: &Current) -> Vec<(&str, bool)> {
        c.phones
            .iter()
            .map(|c| (c.value.as_str(), c.primary))
            .collect()
    }

    #[test]
    fn keep_existing_drops_the_incoming_phone() {
        let after = seed(&policy(ContactPolicy::KeepExisting, Primary::Existing));
        assert_eq!(phones(&after), [("+1C", true)]);
    }

    #[test]
    fn take_incoming_replaces_the_phone() {
        let after = seed(&policy(ContactPolicy::TakeIncoming, Primary::Existing));
        assert_eq!(phones(&after), [("+1B", true)]);
    }

    #[test]
    fn keep_both_with_existing_primary_adds_a_secondary() {
        let after = seed(&policy(ContactPolicy::KeepBoth, Primary::Existing));
        assert_eq!(phones(&after), [("+1C", true), ("+1B", false)]);
    }

    #[test]
    fn keep_both_with_incoming_primary_promotes_the_new_phone() {
        let after = seed(&policy(ContactPolicy::KeepBoth, Primary::Incoming));
        assert_eq!(phones(&after), [("+1C", false), ("+1B", true)]);
    }

    #[test]
    fn an_empty_field_is_always_filled() {
        let p = policy(ContactPolicy::KeepExisting, Primary::Existing);
        let current = Current::default();
        let incoming = Incoming {
            name: Some("Ann".into()),
            description: Some("VIP".into()),
            emails: vec![inc("ann@x.io")],
            phones: vec![inc("+1B")],
        };
        let after = preview(&current, &plan(&p, &current, &incoming));
        assert_eq!(after.name.as_deref(), Some("Ann"));
        assert_eq!(after.description.as_deref(), Some("VIP"));
        assert_eq!(phones(&after), [("+1B", true)]);
        assert_eq!(after.emails.len(), 1);
    }

    #[test]
    fn nothing_incoming_changes_nothing() {
        let p = policy(ContactPolicy::TakeIncoming, Primary::Incoming);
        let current = Current {
            name: Some("John".into()),
            description: Some("d".into()),
            emails: vec![contact("a@x.io", true)],
            phones: vec![contact("+1C", true)],
        };
        assert!(plan(&p, &current, &Incoming::default()).is_empty());
    }

    #[test]
    fn take_incoming_promotes_a_known_secondary_and_drops_the_old_primary() {
        let p = policy(ContactPolicy::TakeIncoming, Primary::Existing);
        let current = Current {
            phones: vec![contact("+1C", true), contact("+1B", false)],
            ..Default::default()
        };
        let incoming = Incoming {
            phones: vec![inc("+1B")],
            ..Default::default()
        };
        let after = preview(&current, &plan(&p, &current, &incoming));
        assert_eq!(phones(&after), [("+1B", true)]);
    }

    #[test]
    fn name_and_description_policies() {
        let mut p = policy(ContactPolicy::KeepBoth, Primary::Existing);
        let current = Current {
            name: Some("John".into()),
            description: Some("first".into()),
            ..Default::default()
        };
        let incoming = Incoming {
            name: Some("Johnny".into()),
            description: Some("second".into()),
            ..Default::default()
        };
        let after = preview(&current, &plan(&p, &current, &incoming));
        assert_eq!(after.name.as_deref(), Some("John"));
        assert_eq!(after.description.as_deref(), Some("first"));

        p.name = FieldPolicy::TakeIncoming;
        p.description = DescriptionPolicy::Append;
        let after = preview(&current, &plan(&p, &current, &incoming));
        assert_eq!(after.name.as_deref(), Some("Johnny"));
        assert_eq!(after.description.as_deref(), Some("first\nsecond"));
        // Appending what is already there changes nothing.
        let again = plan(&p, &after, &incoming);
        assert!(
            again
                .iter()
                .all(|c| !matches!(c, Change::Description { .. }))
        );

        p.description = DescriptionPolicy::TakeIncoming;
        let after = preview(&current, &plan(&p, &current, &incoming));
        assert_eq!(after.description.as_deref(), Some("second"));
    }

    #[test]
    fn further_values_are_only_ever_secondary() {
        let p = policy(ContactPolicy::TakeIncoming, Primary::Incoming);
        let current = Current {
            emails: vec![contact("old@x.io", true)],
            ..Default::default()
        };
        let incoming = Incoming {
            emails: vec![inc("new@x.io"), inc("other@x.io")],
            ..Default::default()
        };
        let after = preview(&current, &plan(&p, &current, &incoming));
        let emails: Vec<_> = after
            .emails
            .iter()
            .map(|c| (c.value.as_str(), c.primary))
            .collect();
        assert_eq!(emails, [("new@x.io", true), ("other@x.io", false)]);
    }

    #[test]
    fn pinned_fields_are_not_replaced_under_take_incoming() {
        let mut p = policy(ContactPolicy::TakeIncoming, Primary::Incoming);
        p.name = FieldPolicy::TakeIncoming;
        p.description = DescriptionPolicy::TakeIncoming;
        let current = Current {
            name: Some("Ann (staff)".into()),
            description: Some("called".into()),
            emails: vec![contact("a@x.io", true), contact("b@x.io", false)],
            phones: vec![contact("+1C", true)],
        };
        let incoming = Incoming {
            name: Some("ann".into()),
            description: Some("from chat".into()),
            emails: vec![inc("b@x.io")],
            phones: vec![inc("+1B"), inc("+1D")],
        };
        let unpinned = plan(&p, &current, &incoming);
        assert!(replaces(&p, &unpinned));
        let pins = Pins {
            name: Some("staff sales".into()),
            description: None,
            email: Some("staff sales".into()),
            phone: Some("token nightly".into()),
        };
        let changes = plan_pinned(&p, &current, &incoming, &pins);
        let after = preview(&current, &changes);
        assert_eq!(after.name.as_deref(), Some("Ann (staff)"));
        // Not pinned: the policy decides as before.
        assert_eq!(after.description.as_deref(), Some("from chat"));
        assert_eq!(after.emails, current.emails, "the pinned primary stays");
        // A further phone is added as secondary, as it would be anyway.
        let phones: Vec<_> = after
            .phones
            .iter()
            .map(|c| (c.value.as_str(), c.primary))
            .collect();
        assert_eq!(phones, [("+1C", true), ("+1D", false)]);
        let kept: Vec<(&str, &str, &str)> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Kept {
                    field,
                    incoming,
                    rule,
                } => Some((&field[..], &incoming[..], &rule[..])),
                _ => None,
            })
            .collect();
        assert_eq!(
            kept,
            [
                ("name", "ann", "name pinned by staff sales"),
                ("email", "b@x.io", "email pinned by staff sales"),
                ("phone", "+1B", "phone pinned by token nightly"),
            ]
        );
        // Pins change nothing the policy would not replace.
        let keep_both = policy(ContactPolicy::KeepBoth, Primary::Existing);
        let plain = plan(&keep_both, &current, &incoming);
        assert!(!replaces(&keep_both, &plain));
        assert_eq!(plan_pinned(&keep_both, &current, &incoming, &pins), plain);
    }
}
