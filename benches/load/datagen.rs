//! Fast, deterministic generation of realistic lead databases through the
//! real schema: varied names, emails on shared and company domains, phones of
//! several countries written in several formats, some leads with several
//! contacts, conversations and history on a fraction.

use std::path::Path;
use std::time::Instant;

use crm_responder::crm::duplicates::reversed;
use crm_responder::crm::identity::name_key;

/// A small, fast, deterministic PRNG (SplitMix64).
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// Next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// One of the items.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const FIRST: &[&str] = &[
    "James",
    "Mary",
    "John",
    "Patricia",
    "Robert",
    "Jennifer",
    "Michael",
    "Linda",
    "William",
    "Elizabeth",
    "David",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Charles",
    "Karen",
    "Christopher",
    "Nancy",
    "Daniel",
    "Lisa",
    "Matthew",
    "Betty",
    "Anthony",
    "Margaret",
    "Mark",
    "Sandra",
    "Donald",
    "Ashley",
    "Steven",
    "Kimberly",
    "Paul",
    "Emily",
    "Andrew",
    "Donna",
    "Joshua",
    "Michelle",
    "Olga",
    "Dmitri",
    "Hans",
    "Greta",
    "Pierre",
    "Amélie",
    "Giulia",
    "Marco",
    "Søren",
    "Zoë",
    "Wei",
    "Mei",
    "Hiroshi",
    "Yuki",
    "Ana",
    "João",
    "Fatima",
    "Omar",
    "Priya",
    "Arjun",
];
/// More first names. Half of the people are named from [`FIRST`] and half
/// from these, so the commonest first names are each about 0.8 % of people
/// and no name is everyone's, as in real populations.
const FIRST_MORE: &[&str] = &[
    "Carol",
    "Amanda",
    "Melissa",
    "Deborah",
    "Stephanie",
    "Rebecca",
    "Sharon",
    "Laura",
    "Cynthia",
    "Amy",
    "Kathleen",
    "Angela",
    "Helen",
    "Anna",
    "Brenda",
    "Pamela",
    "Emma",
    "Nicole",
    "Samantha",
    "Katherine",
    "Christine",
    "Rachel",
    "Carolyn",
    "Janet",
    "Maria",
    "Olivia",
    "Heather",
    "Diane",
    "Julie",
    "Joyce",
    "Victoria",
    "Kelly",
    "Christina",
    "Lauren",
    "Joan",
    "Evelyn",
    "Judith",
    "Megan",
    "Andrea",
    "Cheryl",
    "Hannah",
    "Jacqueline",
    "Martha",
    "Gloria",
    "Teresa",
    "Ann",
    "Sara",
    "Madison",
    "Frances",
    "Kathryn",
    "Janice",
    "Jean",
    "Abigail",
    "Alice",
    "Judy",
    "Sophia",
    "Grace",
    "Denise",
    "Amber",
    "Doris",
    "Marilyn",
    "Danielle",
    "Beverly",
    "Isabella",
    "Theresa",
    "Diana",
    "Natalie",
    "Brittany",
    "Charlotte",
    "Marie",
    "Kayla",
    "Alexis",
    "Lori",
    "Kenneth",
    "Kevin",
    "Brian",
    "George",
    "Timothy",
    "Ronald",
    "Edward",
    "Jason",
    "Jeffrey",
    "Ryan",
    "Jacob",
    "Gary",
    "Nicholas",
    "Eric",
    "Jonathan",
    "Stephen",
    "Larry",
    "Justin",
    "Scott",
    "Brandon",
    "Benjamin",
    "Samuel",
    "Gregory",
    "Alexander",
    "Frank",
    "Patrick",
    "Raymond",
    "Jack",
    "Dennis",
    "Jerry",
    "Tyler",
    "Aaron",
    "Jose",
    "Adam",
    "Nathan",
    "Henry",
    "Douglas",
    "Zachary",
    "Peter",
    "Kyle",
    "Ethan",
    "Walter",
    "Noah",
    "Jeremy",
    "Christian",
    "Keith",
    "Roger",
    "Terry",
    "Gerald",
    "Harold",
    "Sean",
    "Austin",
    "Carl",
    "Arthur",
    "Lawrence",
    "Dylan",
    "Jesse",
    "Jordan",
    "Bryan",
    "Billy",
    "Joe",
    "Bruce",
    "Gabriel",
    "Logan",
    "Albert",
    "Willie",
    "Alan",
    "Juan",
    "Wayne",
    "Elijah",
    "Randy",
    "Roy",
    "Vincent",
    "Ralph",
    "Eugene",
    "Russell",
    "Bobby",
    "Mason",
    "Philip",
    "Louis",
    "Sergei",
    "Natasha",
    "Chen",
    "Aisha",
    "Mohammed",
    "Ahmed",
    "Leila",
    "Ines",
    "Lucia",
    "Mateo",
    "Santiago",
    "Camila",
    "Valentina",
    "Luca",
    "Sofia",
    "Klaus",
    "Ingrid",
    "Astrid",
    "Lars",
    "Sven",
    "Camille",
    "Amelie",
    "Francois",
    "Ravi",
    "Anil",
    "Deepa",
    "Kwame",
    "Amara",
    "Chidi",
    "Nia",
    "Tomasz",
    "Katarzyna",
    "Piotr",
    "Agnieszka",
];
/// Surnames of most people are made of three parts, one of each of these
/// lists (30 x 12 x 28 = 10,080 surnames, e.g. "Barenford", "Moravski");
/// the common ones of [`LAST`] are 12 % of people's (about what the 53
/// commonest surnames are in the United States). With the first names, a
/// new person has about two namesakes among a million (a million people
/// of 3,180 names, as an earlier version made, have 314 each: every new
/// lead then had the most possible-duplicate links there can be).
const ONSET: &[&str] = &[
    "Al", "Bar", "Ber", "Bran", "Cal", "Car", "Dal", "Dor", "El", "Fal", "Gar", "Hal", "Har",
    "Kel", "Kor", "Lan", "Mar", "Mor", "Nor", "Ol", "Pen", "Ral", "Ros", "Sal", "Stan", "Tor",
    "Val", "Wal", "Wes", "Zel",
];
/// The middle part of a made surname.
const MIDDLE: &[&str] = &[
    "a", "e", "i", "o", "u", "ab", "en", "in", "or", "ov", "an", "el",
];
/// The last part of a made surname.
const CODA: &[&str] = &[
    "berg", "by", "cott", "dale", "den", "field", "ford", "gate", "ham", "ley", "lin", "man",
    "mont", "ner", "ridge", "rot", "sen", "ski", "son", "ton", "well", "wick", "wood", "ez", "ova",
    "ini", "escu", "ak",
];

const LAST: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Ivanov",
    "Petrova",
    "Müller",
    "Schmidt",
    "Dubois",
    "Rossi",
    "Jensen",
    "O'Brien",
    "Wang",
    "Tanaka",
    "Silva",
    "Haddad",
    "Patel",
];
const AREAS: [u32; 8] = [212, 310, 408, 415, 617, 646, 702, 312];
const SHARED_DOMAINS: &[&str] = &[
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "hotmail.com",
    "icloud.com",
    "mail.ru",
];

/// One generated person: what a chat from them would carry.
#[derive(Debug, Clone)]
pub struct Person {
    /// Display name.
    pub name: String,
    /// Primary email (normalised).
    pub email: String,
    /// Primary phone in E.164.
    pub phone: String,
}

/// Person number `i` of a dataset: the same `i` always gives the same person,
/// so load generators can address existing leads without reading the database.
pub fn person(i: u64) -> Person {
    let mut rng = Rng::new(i.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xC0FFEE);
    let first = if rng.below(2) == 0 {
        rng.pick(FIRST)
    } else {
        rng.pick(FIRST_MORE)
    };
    let last = if rng.below(100) < 12 {
        rng.pick(LAST).to_string()
    } else {
        format!("{}{}{}", rng.pick(ONSET), rng.pick(MIDDLE), rng.pick(CODA))
    };
    let initial = first.chars().next().unwrap_or('x');
    let local = match rng.below(4) {
        0 => format!("{}.{}{}", first, last, i),
        1 => format!("{}{}{}", initial, last, i),
        2 => format!("{}_{}", last, i),
        _ => format!("{}{}", first, i),
    }
    .to_lowercase()
    .replace(['\'', ' '], "");
    let domain = if rng.below(3) == 0 {
        format!("company{}.com", rng.below(5000))
    } else {
        rng.pick(SHARED_DOMAINS).to_string()
    };
    // Unique national numbers per i, in three countries.
    let phone = match i % 3 {
        0 => format!(
            "+1{}{:07}",
            AREAS[(i / 3 % 8) as usize],
            (i * 7) % 10_000_000
        ),
        1 => format!("+447{:09}", i % 1_000_000_000),
        _ => format!("+4915{:09}", i % 1_000_000_000),
    };
    Person {
        name: format!("{first} {last}"),
        email: format!("{local}@{domain}"),
        phone,
    }
}

/// Bumped when generated data changes, so that cached databases are made
/// again (`leads-v{DATA_VERSION}-{n}.sqlite3`).
pub const DATA_VERSION: u32 = 4;

/// The generator writes phone keys itself (parsing a million numbers would
/// take longer than the rest): they must be the keys the service computes
/// from every format the scenarios type, or "existing" visitors would make
/// new leads. Version 1 stored German mobiles under keys the service never
/// computed for them.
fn keys_are_the_services() {
    use crm_responder::crm::identity::Phone;
    for i in 1..=3_000 {
        let p = person(i);
        for style in 0..6 {
            let typed = phone_as_typed(&p.phone, style);
            let key = Phone::parse(&typed, phonenumber::country::Id::US).map(|k| k.normalized);
            assert_eq!(
                key.as_deref(),
                Some(p.phone.as_str()),
                "the service reads {typed:?} as another key than the generator stores"
            );
        }
    }
}

/// The phone written as a person might type it (same number, other format).
pub fn phone_as_typed(e164: &str, style: u64) -> String {
    if let Some(us) = e164.strip_prefix("+1") {
        let (a, b, c) = (&us[..3], &us[3..6], &us[6..]);
        match style % 3 {
            0 => format!("({a}) {b}-{c}"),
            1 => format!("1 ({a}) {b} {c}"),
            _ => format!("+1 {a}-{b}-{c}"),
        }
    } else {
        let (cc, rest) = e164.split_at(3);
        match style % 2 {
            0 => format!("{cc} {} {}", &rest[..4], &rest[4..]),
            _ => format!("{cc}-{rest}"),
        }
    }
}

/// Creates a database of `n` leads at `path` through the service's own
/// schema and migrations. Returns seconds taken.
pub fn generate(path: &Path, n: u64) -> f64 {
    let started = Instant::now();
    keys_are_the_services();
    let _ = std::fs::remove_file(path);
    {
        // Let the service create the schema exactly as it would.
        let db =
            crm_responder::store::Db::open(path, std::time::Duration::from_secs(5)).expect("open");
        db.close();
    }
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF; PRAGMA cache_size=-200000; BEGIN;",
    )
    .expect("pragmas");
    {
        let at = "2026-01-01T00:00:00.000Z";
        let mut lead = conn
            .prepare("INSERT INTO leads (id, name, name_key, name_rev, description, status, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)")
            .unwrap();
        let mut email = conn
            .prepare("INSERT INTO lead_emails (lead_id, value, raw, is_primary, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")
            .unwrap();
        let mut phone = conn
            .prepare("INSERT INTO lead_phones (lead_id, value, raw, is_primary, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")
            .unwrap();
        let mut visitor = conn
            .prepare("INSERT INTO lead_visitors (platform, visitor_id, lead_id, created_at) VALUES ('jivo', ?1, ?2, ?3)")
            .unwrap();
        let mut conversation = conn
            .prepare("INSERT INTO conversations (lead_id, platform, chat_id, agent, closed, started_at, updated_at) VALUES (?1, 'jivo', ?2, 'Agent', 1, ?3, ?3)")
            .unwrap();
        let mut message = conn
            .prepare("INSERT INTO messages (conversation_id, ext_id, sender, author, text, at) VALUES (?1, ?2, ?3, NULL, ?4, ?5)")
            .unwrap();
        let mut history = conn
            .prepare("INSERT INTO history (lead_id, at, field, old, new, source) VALUES (?1, ?2, 'phone', ?3, ?4, 'import')")
            .unwrap();
        let statuses = ["new", "contacted", "qualified", "customer", "lost"];
        for i in 1..=n {
            let p = person(i);
            let key = name_key(&p.name);
            let id = i as i64;
            lead.execute(rusqlite::params![
                id,
                p.name,
                key,
                reversed(&key),
                None::<String>,
                statuses[(i % 5) as usize],
                at
            ])
            .unwrap();
            email
                .execute(rusqlite::params![id, p.email, p.email, 1, at])
                .unwrap();
            phone
                .execute(rusqlite::params![
                    id,
                    p.phone,
                    phone_as_typed(&p.phone, i),
                    1,
                    at
                ])
                .unwrap();
            visitor
                .execute(rusqlite::params![format!("number:{i}"), id, at])
                .unwrap();
            if i % 7 == 0 {
                // A second email and phone on some leads.
                email
                    .execute(rusqlite::params![
                        id,
                        format!("work{i}@company{}.com", i % 997),
                        format!("work{i}@company{}.com", i % 997),
                        0,
                        at
                    ])
                    .unwrap();
                let second = format!("+4420{:08}", i % 100_000_000);
                phone
                    .execute(rusqlite::params![id, second, second, 0, at])
                    .unwrap();
                history
                    .execute(rusqlite::params![id, at, None::<String>, second])
                    .unwrap();
            }
            if i % 10 == 0 {
                conversation
                    .execute(rusqlite::params![id, format!("seed-{i}"), at])
                    .unwrap();
                let conv = conn.last_insert_rowid();
                for m in 0..10 {
                    let sender = if m % 2 == 0 { "visitor" } else { "agent" };
                    message
                        .execute(rusqlite::params![
                            conv,
                            format!("m{m}"),
                            sender,
                            format!("message {m} of lead {i}"),
                            at
                        ])
                        .unwrap();
                }
            }
        }
    }
    conn.execute_batch("COMMIT; PRAGMA wal_checkpoint(TRUNCATE); ANALYZE;")
        .expect("commit");
    started.elapsed().as_secs_f64()
}
