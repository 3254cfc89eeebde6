"""The deterministic seeded account: the variety a real Clevertim account has.

Owns: `generate(contacts, seed)`, the records of every resource (ids, fields, visibility) for an
account of that size. Same arguments, same records, byte for byte (one `random.Random(seed)`,
no wall clock). Back-reference lists (`notes`, `tasks`, ...) are not set here: the store computes
them from the children, exactly as it does for writes.

Must not import: the store, the server, httpx.

Proportions for N contacts: companies N/10, opportunities N/10, cases N/20, tasks 4N/10, notes
4N/10, comments 15N/100, 13 custom fields, 8 users, 3 groups. The first records of each kind are
"showcases" with a fixed variant each (unicode names, empty names, many emails, a private record
of another user, ...) so that even a 20-contact account holds every case a test needs; the rest
are random. Users: 1 is the owner (the emulator's main token), 2 a read-only user (the read-only
token), 3 another user whose private records the owner cannot see. Groups: bit 1 and 2 include
the owner, bit 4 does not, so records shared with group 4 only are hidden from the owner.
"""

from __future__ import annotations

import random
import time
from typing import Any

Record = dict[str, Any]

OWNER, READ_ONLY_USER, OTHER_USER = 1, 2, 3
N_USERS = 8
HIDDEN_GROUP = 4  # the owner is not a member
# 2016-01-01 .. 2025-01-01, and lm up to ~6 months after ao; fixed so the seed alone decides.
_T0, _SPAN, _LM_SPAN = 1451606400, 9 * 365 * 86400, 180 * 86400

FIRST = [
    "Ana", "Bob", "Chloé", "Dmitri", "Émile", "Fatima", "Gregor", "Hana", "Ingrid", "José",
    "Jürgen", "Kenji", "Łukasz", "María", "Nnamdi", "Olga", "Priya", "Quentin", "Renée", "Søren",
    "Zoë", "Ахмед", "Анна", "محمد", "Ιωάννης", "美咲", "太郎", "민준", "O'Brien", "Jean-Luc",
]  # fmt: skip
LAST = [
    "Smith", "Müller", "García", "Nguyễn", "Øster", "Kowalczyk", "Dubois", "Rossi", "Yılmaz",
    "Ivanova", "Иванов", "山田", "김", "Ó Súilleabháin", "van der Berg", "Nakamura", "Okafor",
    "Papadopoulos", "Jönsson", "Lindqvist", "d'Arcy", "Brown", "Wilson", "Taylor", "Chen",
]  # fmt: skip
COMPANY_WORDS = ["Acme", "Globex", "Initech", "Umbrella", "Stark", "Nordwind", "Café Müller", "Ωmega",
                 "東京商事", "Łódź Tools", "Soylent", "Hooli", "Vandelay", "Wayne", "Cyberdyne"]  # fmt: skip
COMPANY_SUFFIX = ["Ltd", "GmbH", "S.A.", "Inc.", "SARL", "AB", "株式会社", "", "& Co.", "LLC"]
CITIES = [("London", "GB", "GB-LND", "SW1A 1AA"), ("Miami", "US", "US-FL", "33101"),
          ("Berlin", "DE", "DE-BE", "10115"), ("Kraków", "PL", "PL-MA", "30-001"),
          ("São Paulo", "BR", "BR-SP", "01000-000"), ("東京", "JP", "JP-13", "100-0001"),
          ("Zürich", "Switzerland", "CH-ZH", "8001"), ("Lagos", "NG", "NG-LA", "100001")]  # fmt: skip
PHONE_TYPES = ["Work", "Home", "Mobile", "Fax", "Pager", "Skype", "Other"]
SM_TYPES = ["Twitter", "Facebook", "LinkedIn", "Skype", "Github", "Instagram"]
CTYPES = "CPSREONTDXIMAVWLFH"
TAGS = ["vip", "newsletter", "partner", "lead-2024", "überfällig", "青", "cold", "hot", "event"]
ATYPES = ["Email", "TO DO", "Meeting", "Call", "Follow up", "Appointment", "Not set"]
OPP_STATUS = ["Open", "Open", "Won", "Lost", "Closed", "Negotiation"]
CURRENCIES = ["EUR", "USD", "GBP", "JPY", "CHF"]
WORDS = ["call", "back", "about", "the", "proposal", "prix", "größe", "会議", "budget", "renewal",
         "contract", "demo", "ticket", "invoice", "délai", "follow", "up", "on", "pricing", "😀"]  # fmt: skip

# (name, elemType, multiple, modelType, allowed values)
CUSTOM_FIELDS: list[tuple[str, str, bool, list[str], list[str]]] = [
    ("Source", "input", False, ["customers", "companies"], []),
    ("Segment", "select", False, ["customers", "companies", "opportunities"], ["SMB", "Mid", "Enterprise"]),
    ("Interests", "select", True, ["customers"], ["CRM", "Email", "Mobile", "API", "Support"]),
    ("Birthday", "date", False, ["customers"], []),
    ("Account manager", "user", False, ["customers", "companies", "cases"], []),
    ("State", "state", False, ["customers", "companies"], []),
    ("Country of origin", "country", False, ["customers"], []),
    ("Sales region", "region", False, ["companies", "opportunities"], []),
    ("Referred by", "contact", True, ["customers", "opportunities"], []),
    ("Parent company", "company", False, ["companies", "cases"], []),
    ("Related case", "case", False, ["opportunities", "customers"], []),
    ("Related deal", "opportunity", False, ["cases"], []),
    ("Billing currency", "currency", False, ["companies", "opportunities"], []),
]
STATES = ["California", "Florida", "Texas", "Bavaria", "Ontario", "Queensland"]
REGIONS = ["US-FL", "GB-LND", "DE-BY", "FR-IDF", "ES-CT"]


def ts(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


class _Gen:
    """One generation run: the rng, the planned id ranges, and a builder per resource."""

    def __init__(self, contacts: int, seed: int) -> None:
        self.rng = random.Random(seed)
        n = contacts
        some = 1 if n > 0 else 0
        self.n_contacts = n
        self.n_companies = max(some, n // 10)
        self.n_opps = max(some, n // 10)
        self.n_cases = max(some, n // 20)
        self.n_tasks = max(some, 4 * n // 10)
        self.n_notes = max(some, 4 * n // 10)
        self.n_comments = max(some, 15 * n // 100)
        # Contacts and companies share one id sequence ("customers"), interleaved as in a real
        # account where people and companies are added over time.
        total = self.n_contacts + self.n_companies
        company_slots = set(self.rng.sample(range(total), self.n_companies)) if total else set()
        self.company_ids = [i + 1 for i in range(total) if i in company_slots]
        self.contact_ids = [i + 1 for i in range(total) if i not in company_slots]

    # --- small helpers ------------------------------------------------------------------------

    def stamps(self) -> tuple[str, str]:
        ao = _T0 + self.rng.randrange(_SPAN)
        return ts(ao), ts(ao + self.rng.randrange(_LM_SPAN))

    def words(self, lo: int, hi: int) -> str:
        return " ".join(self.rng.choices(WORDS, k=self.rng.randint(lo, hi)))

    def visibility(self, i: int) -> tuple[bool, int, int | None]:
        """(is_private, gid, puser): showcases 3..6, then ~3% own-private, ~2% hidden."""
        variant = i if 3 <= i <= 6 else self.rng.randrange(100)
        if variant in (3, 10, 11):
            return True, 0, OWNER
        if variant == 4:
            return True, 0, OTHER_USER
        if variant == 5:
            return False, HIDDEN_GROUP, None
        if variant in (6, 12):
            return False, 1, None
        return False, 0, None

    def common(self, rec: Record, i: int, *, with_user: bool = False) -> Record:
        rec["ao"], rec["lm"] = self.stamps()
        rec["is_private"], rec["gid"], rec["puser"] = self.visibility(i)
        if with_user:
            rec["userId"] = self.rng.randint(1, N_USERS)
        return rec

    def customer_ref(self) -> int | None:
        pool = self.contact_ids if self.rng.random() < 0.8 else self.company_ids
        return self.rng.choice(pool) if pool and self.rng.random() < 0.9 else None

    def cf_value(self, elem: str, allowed: list[str]) -> str:
        r = self.rng
        if elem == "select":
            return r.choice(allowed)
        if elem == "date":
            return f"{r.randint(1950, 2030):04d}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"
        if elem == "user":
            return str(r.randint(1, N_USERS))
        if elem == "state":
            return r.choice(STATES)
        if elem == "country":
            return r.choice(["GB", "US", "DE", "PL", "JP", "Brazil"])
        if elem == "region":
            return r.choice(REGIONS)
        if elem == "contact":
            return str(r.choice(self.contact_ids)) if self.contact_ids else "0"
        if elem == "company":
            return str(r.choice(self.company_ids)) if self.company_ids else "0"
        if elem == "case":
            return str(r.randint(1, max(1, self.n_cases)))
        if elem == "opportunity":
            return str(r.randint(1, max(1, self.n_opps)))
        if elem == "currency":
            return r.choice(CURRENCIES)
        return self.words(1, 3)

    def custom_values(self, model: str, *, full: bool) -> dict[str, Any]:
        """Values for the custom fields of `model`; `full` fills every one (a showcase)."""
        cf: dict[str, Any] = {}
        for fid, (_, elem, multiple, models, allowed) in enumerate(CUSTOM_FIELDS, start=1):
            if model not in models or not (full or self.rng.random() < 0.25):
                continue
            if multiple:
                k = self.rng.randint(1, 3) if not full else 2
                cf[str(fid)] = [self.cf_value(elem, allowed) for _ in range(k)]
            else:
                cf[str(fid)] = self.cf_value(elem, allowed)
        return cf

    def date_parts(self, with_time: bool) -> dict[str, int]:
        r = self.rng
        parts = {"y": r.randint(2016, 2026), "mo": r.randint(1, 12), "d": r.randint(1, 28)}
        if with_time:
            parts["h"], parts["mi"] = r.randint(0, 23), r.choice([0, 15, 30, 45])
        return parts

    # --- resources ----------------------------------------------------------------------------

    def users(self) -> list[Record]:
        names = ["Alex Owner", "Robin Readonly", "Sam Other", "Kim Sales", "Lee Support",
                 "Mo Manager", "Noa Pending", "Ирина Петрова"]  # fmt: skip
        out = []
        for uid, name in enumerate(names[:N_USERS], start=1):
            rec: Record = {
                "id": uid,
                "user": name,
                "email": f"user{uid}@example.com",
                "is_owner": uid == OWNER,
                "is_admin": uid in (OWNER, 6),
                "permissions": ["read"] if uid == READ_ONLY_USER else ["read", "write", "delete"],
                "pending": uid == 7,
            }
            out.append(rec)
        return out

    def groups(self) -> list[Record]:
        spec = [("Sales", 1, [OWNER, OTHER_USER, 4]), ("Support", 2, [OWNER, READ_ONLY_USER, 5]),
                ("Management", HIDDEN_GROUP, [OTHER_USER, 6])]  # fmt: skip
        return [{"id": i, "name": n, "gid": g, "users": u} for i, (n, g, u) in enumerate(spec, start=1)]

    def customfields(self) -> list[Record]:
        out = []
        for fid, (name, elem, multiple, models, allowed) in enumerate(CUSTOM_FIELDS, start=1):
            rec: Record = {
                "id": fid,
                "name": name,
                "fullname": f"{name} ({elem})",
                "elemType": elem,
                "modelType": models,
                "multiple": multiple,
                "values": allowed,
            }
            rec["ao"], rec["lm"] = self.stamps()
            out.append(rec)
        return out

    def company(self, i: int, cid: int) -> Record:
        r = self.rng
        city, country, region, postcode = r.choice(CITIES)
        name = "" if i == 1 else f"{r.choice(COMPANY_WORDS)} {r.choice(COMPANY_SUFFIX)}".strip()
        rec: Record = {
            "id": cid,
            "cn": name,
            "description": self.words(0, 8) if r.random() < 0.6 else None,
            "is_company": True,
            "email": [f"info@company{cid}.example"] if r.random() < 0.7 else [],
            "phones": [{"type": "Work", "no": f"+44 20 {r.randint(1000, 9999)} {r.randint(1000, 9999)}"}],
            "website": [f"https://company{cid}.example"],
            "address": f"{r.randint(1, 200)} Main Street",
            "city": city,
            "postcode": postcode,
            "region": region,
            "country": country,
            "smids": [],
            "ctype": r.choice(CTYPES),
            "cf": self.custom_values("companies", full=i == 0),
            "tags": r.sample(TAGS, r.randint(0, 2)),
            "files": [],
            "lfiles": [],
            "lc": None,
            "cphoto": None,
        }
        return self.common(rec, i)

    def contact(self, i: int, cid: int) -> Record:
        r = self.rng
        full = i == 0
        fn = "" if i == 1 else r.choice(FIRST)
        ln = r.choice(LAST)
        city, country, region, postcode = r.choice(CITIES)
        n_email = 3 if full else r.choice([0, 1, 1, 1, 2])
        n_phone = 3 if full else r.choice([0, 1, 1, 2])
        rec: Record = {
            "id": cid,
            "fn": fn,
            "ln": ln,
            "title": r.choice(["CEO", "Engineer", "Directrice", "営業部長", None, ""]),
            "companyId": r.choice(self.company_ids) if self.company_ids and r.random() < 0.6 else None,
            "description": self.words(0, 12) if full or r.random() < 0.4 else None,
            "is_company": False,
            "email": [f"{'c'}{cid}.{k}@example.com" for k in range(n_email)],
            "phones": [
                {"type": r.choice(PHONE_TYPES), "no": f"+1 555 {r.randint(100, 999)} {cid % 10000:04d}"}
                for _ in range(n_phone)
            ],
            "website": [f"https://{cid}.example.org"] if full or r.random() < 0.2 else [],
            "address": f"{r.randint(1, 999)} Rue de la Paix" if r.random() < 0.5 else None,
            "city": city,
            "postcode": postcode,
            "region": region,
            "country": country,
            "smids": [{"type": t, "smid": f"@user{cid}"} for t in (SM_TYPES[:3] if full else [])]
            or ([{"type": r.choice(SM_TYPES), "smid": f"user{cid}"}] if r.random() < 0.15 else []),
            "ctype": r.choice(CTYPES),
            "cf": self.custom_values("customers", full=full),
            "tags": r.sample(TAGS, 3 if full else r.choice([0, 0, 1, 2])),
            "files": [],
            "lfiles": [],
            "lc": ts(_T0 + r.randrange(_SPAN)) if r.random() < 0.3 else None,
            "cphoto": f"{cid}.jpg" if r.random() < 0.05 else None,
        }
        if i == 2 or (i > 6 and r.random() < 0.1):
            # A sparse record: optional properties missing altogether, not null.
            for key in ("title", "description", "website", "smids", "address", "postcode", "lc", "cphoto"):
                rec.pop(key, None)
        if full or r.random() < 0.05:
            # Properties the reference does not describe; real responses carry them.
            rec["fullname"] = f"{fn} {ln}".strip()
            rec["atypet"] = "P"
            rec["app"] = {"src": "web", "v": 2}
        return self.common(rec, i)

    def opportunity(self, i: int, oid: int) -> Record:
        r = self.rng
        rec: Record = {
            "id": oid,
            "name": f"Deal {oid}: {self.words(1, 4)}",
            "description": self.words(0, 10),
            "status": r.choice(OPP_STATUS),
            "leadUser": r.randint(1, N_USERS),
            "value": r.choice(["4500", "12.50", "0", "1000000", "99.99"]),
            "currency": r.choice(CURRENCIES),
            "cust": self.customer_ref(),
            "tags": r.sample(TAGS, r.choice([0, 1])),
            "cf": self.custom_values("opportunities", full=i == 0),
        }
        return self.common(rec, i, with_user=True)

    def case(self, i: int, cid: int) -> Record:
        r = self.rng
        rec: Record = {
            "id": cid,
            "name": f"Case {cid}: {self.words(1, 5)}",
            "description": self.words(0, 15) if r.random() < 0.7 else "",
            "leadUser": r.randint(1, N_USERS),
            "cust": self.customer_ref(),
            "tags": r.sample(TAGS, r.choice([0, 1, 2])),
            "cf": self.custom_values("cases", full=i == 0),
            "files": [],
            "lfiles": [],
        }
        return self.common(rec, i)

    def task(self, i: int, tid: int) -> Record:
        r = self.rng
        with_time = i == 0 or (i != 1 and r.random() < 0.6)
        recurring = i == 2 or r.random() < 0.05
        rec: Record = {
            "id": tid,
            "name": self.words(2, 6).capitalize(),
            "location": r.choice(["", "Office", "Zoom", "Café Central", None]),
            "atype": r.choice(ATYPES),
            "startDate": self.date_parts(with_time),
            "cust": self.customer_ref(),
            "case": r.randint(1, self.n_cases) if self.n_cases and r.random() < 0.2 else None,
            "opp": r.randint(1, self.n_opps) if self.n_opps and r.random() < 0.2 else None,
            "aUserId": r.randint(1, N_USERS),
            "is_completed": i == 3 or r.random() < 0.3,
            "is_deleted": i == 4 or r.random() < 0.03,
            "rec": r.choice("DWMY") if recurring else "N",
            "recevery": r.randint(1, 4) if recurring else 0,
            "recopts": {"days": [1, 3]} if recurring else {},
        }
        if with_time or r.random() < 0.5:
            rec["endDate"] = self.date_parts(with_time)
        if r.random() < 0.05:
            rec["atypet"] = "T"
        return self.common(rec, i, with_user=True)

    def note(self, i: int, nid: int) -> Record:
        r = self.rng
        ntype = "S" if i == 1 else "E" if i == 2 else ("N" if r.random() < 0.85 else r.choice("SME"))
        desc = f"<p>{self.words(3, 30)}</p>" if i != 3 else "Line one ✓\nline two"
        rec: Record = {
            "id": nid,
            "desc": desc,
            "hl": headline(desc),
            "type": ntype,
            "cust": self.customer_ref(),
            "case": r.randint(1, self.n_cases) if self.n_cases and r.random() < 0.15 else None,
            "opportunity": r.randint(1, self.n_opps) if self.n_opps and r.random() < 0.15 else None,
            "files": [],
            "lfiles": [],
        }
        if ntype in ("S", "E"):
            rec["email"] = {
                "f": f"sender{nid}@example.com",
                "s": self.words(2, 5),
                "t": [{"e": f"to{nid}@example.com", "s": "s"}],
                "c": [],
                "b": [{"e": "bounce@example.com", "s": "b", "t": "mailbox full"}] if i == 1 else [],
            }
        if r.random() < 0.05:
            rec["app"] = r.choice(["web", "iphone", "android"])
        return self.common(rec, i, with_user=True)

    def comment(self, i: int, cid: int) -> Record:
        r = self.rng
        on_note = i % 2 == 0 if i < 2 else r.random() < 0.5
        nid = r.randint(1, self.n_notes) if on_note and self.n_notes else None
        tid = None if nid else (r.randint(1, self.n_tasks) if self.n_tasks else None)
        rec: Record = {"id": cid, "comment": self.words(1, 12), "nid": nid, "tid": tid}
        return self.common(rec, i, with_user=True)


def headline(desc: str) -> str:
    """The note headline the service derives from its text: the first line, tags dropped, 80 chars."""
    text = desc
    while "<" in text and ">" in text.split("<", 1)[1]:
        head, rest = text.split("<", 1)
        text = head + rest.split(">", 1)[1]
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first[:80]


def generate(contacts: int, seed: int) -> dict[str, list[Record]]:
    """Every record of a seeded account, per resource name, in pull order."""
    if contacts < 0:
        raise ValueError("contacts must be >= 0")
    g = _Gen(contacts, seed)
    customers = sorted(
        [(cid, g.company(i, cid)) for i, cid in enumerate(g.company_ids)]
        + [(cid, g.contact(i, cid)) for i, cid in enumerate(g.contact_ids)],
        key=lambda pair: pair[0],
    )
    return {
        "customfield": g.customfields(),
        "user": g.users(),
        "group": g.groups(),
        "company": [rec for _, rec in customers if rec["is_company"]],
        "contact": [rec for _, rec in customers if not rec["is_company"]],
        "opportunity": [g.opportunity(i, i + 1) for i in range(g.n_opps)],
        "case": [g.case(i, i + 1) for i in range(g.n_cases)],
        "task": [g.task(i, i + 1) for i in range(g.n_tasks)],
        "note": [g.note(i, i + 1) for i in range(g.n_notes)],
        "comment": [g.comment(i, i + 1) for i in range(g.n_comments)],
    }
