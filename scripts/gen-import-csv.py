#!/usr/bin/env python3
"""Writes a realistic CSV for `crm-responder import`, for measuring import speed.

    scripts/gen-import-csv.py ROWS OUT.csv [--seed N] [--offset K]

The same arguments always give the same file. Each row is a person from
another CRM: varied names (namesakes included, as in real lists), emails on
shared and company domains, phones of six countries written in several
formats (with and without country code; national numbers read with the
default region US), a second email on about 1 row in 8 and a second phone on
about 1 in 7, a status, notes on some rows and three extra columns (custom
fields). Some rows repeat an earlier person inside the file (same email, the
phone in another format, the name in other case: merged), some repeat an
earlier row exactly, and about 1 row in 250 is bad (invalid email or phone,
nothing identifying, a missing field).

--offset K numbers the people from K on, so that a second file with another
offset holds other people (a database of 1M leads, then 1M new rows).
"""

import argparse
import random

FIRST = """James Mary John Patricia Robert Jennifer Michael Linda William Elizabeth
David Barbara Richard Susan Joseph Jessica Thomas Sarah Charles Karen Christopher
Nancy Daniel Lisa Matthew Betty Anthony Margaret Mark Sandra Donald Ashley Steven
Kimberly Paul Emily Andrew Donna Joshua Michelle Kenneth Carol Kevin Amanda Brian
Melissa George Deborah Timothy Stephanie Ronald Rebecca Edward Sharon Jason Laura
Jeffrey Cynthia Ryan Kathleen Jacob Amy Gary Angela Nicholas Shirley Eric Anna
Jonathan Brenda Stephen Pamela Larry Emma Justin Nicole Scott Helen Brandon Samantha
Olga Dmitri Sergei Natalia Ivan Tatiana Hans Greta Klaus Ingrid Pierre Amélie Camille
Louis Giulia Marco Luca Chiara Søren Freja Zoë Wei Mei Li Hiroshi Yuki Haruto Sakura
Ana João Lucas Beatriz Fatima Omar Ahmed Layla Priya Arjun Rahul Ananya Kwame Amara
Diego Sofía Mateo Valentina Jürgen Björn Agnieszka Piotr Ole Astrid""".split()

LAST = """Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez
Hernandez Lopez Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee
Perez Thompson White Harris Sanchez Clark Ramirez Lewis Robinson Walker Young Allen
King Wright Scott Torres Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera
Campbell Mitchell Carter Roberts Gomez Phillips Evans Turner Diaz Parker Cruz Edwards
Collins Reyes Stewart Morris Morales Murphy Cook Rogers Gutierrez Ortiz Morgan Cooper
Peterson Bailey Reed Kelly Howard Ramos Kim Cox Ward Richardson Watson Brooks Chavez
Wood James Bennett Gray Mendoza Ruiz Hughes Price Alvarez Castillo Sanders Patel
Myers Long Ross Foster Jimenez Ivanov Petrova Smirnov Kuznetsova Popov Müller Schmidt
Schneider Fischer Weber Dubois Lefèvre Moreau Rossi Russo Ferrari Jensen Nielsen
O'Brien Murphy-Byrne Wang Zhang Liu Chen Tanaka Suzuki Sato Silva Santos Oliveira
Haddad Khan Singh Kumar Okafor Mensah Kowalski Nowak Andersson Johansson""".split()

SHARED = ["gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com",
          "mail.ru", "gmx.de", "orange.fr", "proton.me", "yandex.ru"]
STATUSES = ["new", "new", "lead", "lead", "qualified", "customer", "lost", ""]
SOURCES = ["web", "fair", "referral", "ads", "cold call", "partner", ""]
CITIES = ["New York", "London", "Berlin", "Paris", "Moscow", "São Paulo",
          "San Francisco", "Munich", "Lyon", "Chicago", ""]
NOTES = ["Met at the fair", "Asked for a quote", "Call back in spring",
         "Wants the enterprise plan; budget \"approved\"", "Prefers email, not phone",
         "Referred by an existing customer", "Interested in the API, integration with ERP"]

# Numbers are unique per person: person i gets slot (i * A) mod M of its
# country's plan, a permutation, so numbers do not come out in order.
M = 7_999_999  # prime, below every plan's size
A = 2_654_435


def phone(i, rng):
    """(E.164 digits, how it is written) for person i."""
    slot = (i * A) % M
    country = i % 6
    if country == 0:  # US, area codes from a list, exchange 200..999
        area = [212, 310, 408, 415, 617, 646, 702, 312, 206, 512][slot % 10]
        rest = slot // 10
        exch, line = 200 + rest % 800, (rest // 800) % 10000
        return rng.choice([
            f"+1 {area}-{exch}-{line:04}",
            f"({area}) {exch}-{line:04}",
            f"{area}.{exch}.{line:04}",
            f"1 ({area}) {exch} {line:04}",
            f"{area}{exch}{line:04}",
        ])
    if country == 1:  # UK mobile 7xxx xxxxxx
        n = 700000000 + slot
        s = f"{n:09}"
        return rng.choice([f"+44 {s[:4]} {s[4:]}", f"+44{s}", f"0044 {s[:4]} {s[4:]}"])
    if country == 2:  # Germany mobile 15x
        n = 15100000000 + slot
        s = str(n)
        return rng.choice([f"+49 {s[:3]} {s[3:]}", f"+49{s}", f"+49 ({s[:3]}) {s[3:7]}-{s[7:]}"])
    if country == 3:  # France mobile 6
        n = 600000000 + slot
        s = f"{n:09}"
        return rng.choice([f"+33 {s[0]} {s[1:3]} {s[3:5]} {s[5:7]} {s[7:]}", f"+33{s}"])
    if country == 4:  # Russia mobile 9xx
        n = 9100000000 + slot
        s = str(n)
        return rng.choice([f"+7 {s[:3]} {s[3:6]}-{s[6:8]}-{s[8:]}", f"+7 ({s[:3]}) {s[3:]}", f"+7{s}"])
    n = 11900000000 + slot  # Brazil, São Paulo mobile
    s = str(n)
    return rng.choice([f"+55 {s[:2]} {s[2:7]}-{s[7:]}", f"+55{s}"])


def person(i, rng):
    first, last = rng.choice(FIRST), rng.choice(LAST)
    name = f"{first} {last}"
    if rng.random() < 0.08:
        name = f"{first} {rng.choice('ABCDEFGHJKLMNPRSTW')}. {last}"
    plain = lambda s: s.lower().replace("'", "").replace(" ", "").replace("-", "")
    local = rng.choice([
        f"{plain(first)}.{plain(last)}{i}",
        f"{plain(first)[0]}{plain(last)}{i}",
        f"{plain(last)}_{i}",
        f"{plain(first)}{i}",
    ])
    if rng.random() < 0.35:
        domain = f"{plain(last)[:6]}{i % 9973}.{rng.choice(['com', 'de', 'co.uk', 'io', 'fr'])}"
    else:
        domain = rng.choice(SHARED)
    email = f"{local}@{domain}"
    if rng.random() < 0.1:
        email = email.capitalize()
    emails = [email]
    if rng.random() < 0.125:
        emails.append(f"{plain(first)}.{i}@{rng.choice(SHARED)}")
    phones = [phone(i, rng)]
    if rng.random() < 0.14:
        phones.append(phone(i + 3_000_000, rng))
    return name, emails, phones


def quote(cell, delim):
    if any(c in cell for c in (delim, '"', "\n", ",", ";")):
        return '"' + cell.replace('"', '""') + '"'
    return cell


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("rows", type=int)
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--offset", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    delim = ","
    header = ["Full Name", "Email", "Phone", "Mobile", "Status", "Notes", "Company", "Source", "City"]
    people = []  # recent people, for in-file repeats
    written = []  # recent rows, for exact repeats
    with open(args.out, "w", encoding="utf-8", newline="") as out:
        out.write("\ufeff" + delim.join(header) + "\r\n")
        for n in range(args.rows):
            i = args.offset + n
            r = rng.random()
            if r < 0.004:
                row = rng.choice([
                    ["Carol Bad", "carol@", "", "", "", "", "", "", ""],
                    ["", "", "", "", "lead", "", "Nobody Inc", "web", ""],
                    ["Gina Short", "gina.short@example.com", "12"],
                    ["Ivan Badphone", "", "12", "", "", "", "", "", ""],
                ])
                out.write(delim.join(quote(c, delim) for c in row) + "\r\n")
                continue
            if r < 0.014 and written:
                out.write(rng.choice(written) + "\r\n")
                continue
            if r < 0.034 and people:
                # The same person again, written differently.
                j, name, emails, phones = rng.choice(people)
                name = name.upper() if rng.random() < 0.5 else name
                emails = [emails[0]] if rng.random() < 0.5 else []
                phones = [phone(j, rng)]
                company, status = "", rng.choice(STATUSES)
            else:
                name, emails, phones = person(i, rng)
                people.append((i, name, emails, phones))
                if len(people) > 50_000:
                    people = people[25_000:]
                company = rng.choice(["", "", "Acme", "Globex", "Initech", "Umbrella", "Hooli"])
                if company:
                    company = f"{company} {i % 997}"
                status = rng.choice(STATUSES)
            notes = rng.choice(NOTES) if rng.random() < 0.2 else ""
            row = [name, "; ".join(emails), phones[0], phones[1] if len(phones) > 1 else "",
                   status, notes, company, rng.choice(SOURCES), rng.choice(CITIES)]
            line = delim.join(quote(c, delim) for c in row)
            out.write(line + "\r\n")
            written.append(line)
            if len(written) > 50_000:
                written = written[25_000:]


if __name__ == "__main__":
    main()
