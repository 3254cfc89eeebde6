"""The deterministic seeded account: the variety a real Clevertim account has.

Owns: `generate(contacts, seed)`, the records of every resource (ids, fields, visibility) for an
account of that size. Same arguments, same records, byte for byte (one `random.Random(seed)`,
no wall clock). Back-reference lists (`notes`, `tasks`, ...) are not set here: the store computes
them from the children, exactly as it does for writes.


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
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from clevertim_sync.emulator import documents
from clevertim_sync.resources import PULL_ORDER

Record = dict[str, Any]
T = TypeVar("T")

OWNER, READ_ONLY_USER, OTHER_USER = 1, 2, 3
SHOWCASES = 8  # records 0..7 of each kind have fixed variants; the rest are random
DONORS = 1024
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
    ("Account managers", "user", True, ["customers", "companies", "cases"], []),
    ("State", "state", False, ["customers", "companies"], []),
    ("Countries", "country", True, ["customers"], []),
    ("Sales region", "region", False, ["companies", "opportunities"], []),
    ("Referred by", "contact", True, ["customers", "opportunities"], []),
    ("Parent company", "company", False, ["companies", "cases"], []),
    ("Related cases", "case", True, ["opportunities", "customers"], []),
    ("Related deal", "opportunity", False, ["cases"], []),
    ("Billing currency", "currency", False, ["companies", "opportunities"], []),
]
# Per model: (field id as the cf key, elemType, multiple, allowed values).
_FIELDS_BY_MODEL = {
    model: [
        (str(fid), elem, multiple, allowed)
        for fid, (_, elem, multiple, models, allowed) in enumerate(CUSTOM_FIELDS, start=1)
        if model in models
    ]
    for model in ("customers", "companies", "cases", "opportunities")
}
STATES = ["California", "Florida", "Texas", "Bavaria", "Ontario", "Queensland"]
REGIONS = ["US-FL", "GB-LND", "DE-BY", "FR-IDF", "ES-CT"]


# Day strings of the seeded time range, so a timestamp is one f-string rather than gmtime+strftime.
_DAYS = [
    time.strftime("%Y-%m-%d", time.gmtime(_T0 + d * 86400)) for d in range((_SPAN + _LM_SPAN) // 86400 + 2)
]


def ts(seconds: int) -> str:
    """ISO-8601 UTC, as the API writes it: 2017-01-02T05:22:12Z."""
    day, rest = divmod(seconds - _T0, 86400)
    if not 0 <= day < len(_DAYS):
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
    hour, rest = divmod(rest, 3600)
    return f"{_DAYS[day]}T{hour:02d}:{rest // 60:02d}:{rest % 60:02d}Z"


class _FastRandom:
    """The few random.Random methods the generator uses, built on random() alone.

    random.Random's choice/randint go through a Python-level rejection loop (~1 µs a call);
    at 100,000 contacts (millions of calls) that was most of the start-up time.
    """

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self.random = self._rng.random

    def choice(self, seq: Sequence[T]) -> T:
        return seq[int(self.random() * len(seq))]

    def randint(self, lo: int, hi: int) -> int:
        return lo + int(self.random() * (hi - lo + 1))

    def randrange(self, n: int) -> int:
        return int(self.random() * n)

    def sample(self, seq: Sequence[T], k: int) -> list[T]:
        return self._rng.sample(seq, k)


class _Gen:
    """One generation run: the rng, the planned id ranges, and a builder per resource."""

    def __init__(self, contacts: int, seed: int) -> None:
        self.rng = _FastRandom(seed)
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
        # Pools drawn once: a phrase is a slice of a random word stream, a tag list a prefix of
        # a shuffled tag set. Varied enough, and two draws a record instead of dozens.
        # Pools scale with the account (up to a cap) so a 30-contact reset per test stays cheap.
        pool = min(8192, 64 + 3 * (total + self.n_tasks + self.n_notes + self.n_comments))
        self._stream = [self.rng.choice(WORDS) for _ in range(pool + 64)]
        self._tag_sets = [self.rng.sample(TAGS, len(TAGS)) for _ in range(64)]
        self._stamps = [self._new_stamps() for _ in range(pool)]
        self._donors: dict[str, list[Record]] = {}

    # --- small helpers ------------------------------------------------------------------------

    def _new_stamps(self) -> tuple[str, str]:
        ao = _T0 + self.rng.randrange(_SPAN)
        return ts(ao), ts(ao + self.rng.randrange(_LM_SPAN))

    def stamps(self) -> tuple[str, str]:
        """(ao, lm) with lm >= ao, drawn from a pool: formatting two timestamps per record was
        the generator's largest single cost."""
        return self.rng.choice(self._stamps)

    def words(self, lo: int, hi: int) -> str:
        start = self.rng.randrange(len(self._stream) - 64)
        return " ".join(self._stream[start : start + self.rng.randint(lo, hi)])

    def tags(self, k: int) -> list[str]:
        return self.rng.choice(self._tag_sets)[:k]

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
        draw = self.rng.random
        for fid, elem, multiple, allowed in _FIELDS_BY_MODEL[model]:
            if not full and draw() >= 0.25:
                continue
            if multiple:
                k = self.rng.randint(1, 3) if not full else 2
                cf[fid] = [self.cf_value(elem, allowed) for _ in range(k)]
            else:
                cf[fid] = self.cf_value(elem, allowed)
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
            "tags": self.tags(r.randint(0, 2)),
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
            "tags": self.tags(3 if full else r.choice([0, 0, 1, 2])),
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
            "tags": self.tags(r.choice([0, 1])),
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
            "tags": self.tags(r.choice([0, 1, 2])),
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

    # --- the bulk: copies of donor records with their own ids, names, links and stamps ---------
    # Building every record property by property cost ~30 random draws each; past the showcases,
    # a record starts as a copy of one of up to DONORS records built that way, and redraws only
    # what makes it itself. Nested values (tags, cf, dates) are shared between copies: nothing
    # mutates a record below its top level.

    def donors(self, kind: str, build: Callable[[int, int], Record], total: int) -> list[Record]:
        pool = self._donors.get(kind)
        if pool is None:
            pool = self._donors[kind] = [build(SHOWCASES + j, 0) for j in range(min(DONORS, total))]
        return pool

    def contact_copy(self, cid: int) -> Record:
        r = self.rng
        rec = dict(r.choice(self.donors("contact", self.contact, self.n_contacts)))
        rec["id"] = cid
        rec["fn"], rec["ln"] = r.choice(FIRST), r.choice(LAST)
        rec["email"] = [f"c{cid}.{k}@example.com" for k in range(len(rec["email"]))]
        if rec["phones"]:
            rec["phones"] = [
                {"type": p["type"], "no": f"+1 555 {100 + cid % 900} {cid % 10000:04d}"}
                for p in rec["phones"]
            ]
        if rec.get("website"):
            rec["website"] = [f"https://{cid}.example.org"]
        if rec.get("smids"):
            rec["smids"] = [{"type": sm["type"], "smid": f"user{cid}"} for sm in rec["smids"]]
        if rec["companyId"] is not None:
            rec["companyId"] = r.choice(self.company_ids)
        if "fullname" in rec:
            rec["fullname"] = f"{rec['fn']} {rec['ln']}".strip()
        rec["ao"], rec["lm"] = self.stamps()
        return rec

    def task_copy(self, tid: int) -> Record:
        r = self.rng
        rec = dict(r.choice(self.donors("task", self.task, self.n_tasks)))
        rec["id"], rec["cust"] = tid, self.customer_ref()
        if rec["case"] is not None:
            rec["case"] = r.randint(1, self.n_cases)
        if rec["opp"] is not None:
            rec["opp"] = r.randint(1, self.n_opps)
        rec["ao"], rec["lm"] = self.stamps()
        return rec

    def note_copy(self, nid: int) -> Record:
        r = self.rng
        rec = dict(r.choice(self.donors("note", self.note, self.n_notes)))
        rec["id"], rec["cust"] = nid, self.customer_ref()
        if rec["case"] is not None:
            rec["case"] = r.randint(1, self.n_cases)
        if rec["opportunity"] is not None:
            rec["opportunity"] = r.randint(1, self.n_opps)
        rec["ao"], rec["lm"] = self.stamps()
        return rec

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


# Children come before their parents, so a consumer can fill each parent's back-reference lists
# from the children already seen and serialize it at once (no second pass, no dict kept).
GENERATION_ORDER = (
    "comment",
    "note",
    "task",
    "case",
    "opportunity",
    "customer",
    "group",
    "user",
    "customfield",
)


def iter_records(contacts: int, seed: int) -> Iterator[tuple[str, Record]]:
    """Every record of a seeded account as (resource name, record), children before parents,
    each resource in increasing id order."""
    if contacts < 0:
        raise ValueError("contacts must be >= 0")
    g = _Gen(contacts, seed)
    yield from _documents(contacts, seed, _records(g))


def _documents(
    contacts: int, seed: int, records: Iterator[tuple[str, Record]]
) -> Iterator[tuple[str, Record]]:
    """The records with their `files`/`lfiles` (and photos) set, then the documents themselves
    (emulator/documents.py: a random stream of its own, so nothing else moves)."""
    for name, rec in records:
        documents.attach(name, rec, contacts)
        yield name, rec
    yield from documents.iter_documents(contacts, seed)


def _records(g: _Gen) -> Iterator[tuple[str, Record]]:
    yield from (("comment", g.comment(i, i + 1)) for i in range(g.n_comments))
    yield from (("note", g.note(i, i + 1) if i < SHOWCASES else g.note_copy(i + 1)) for i in range(g.n_notes))
    yield from (("task", g.task(i, i + 1) if i < SHOWCASES else g.task_copy(i + 1)) for i in range(g.n_tasks))
    yield from (("case", g.case(i, i + 1)) for i in range(g.n_cases))
    yield from (("opportunity", g.opportunity(i, i + 1)) for i in range(g.n_opps))
    companies = set(g.company_ids)
    n_company = n_contact = 0
    for cid in range(1, len(g.company_ids) + len(g.contact_ids) + 1):
        # Interleaved in id order; each kind numbers its own showcases (i) from 0.
        if cid in companies:
            yield "company", g.company(n_company, cid)
            n_company += 1
        else:
            yield "contact", g.contact(n_contact, cid) if n_contact < SHOWCASES else g.contact_copy(cid)
            n_contact += 1
    yield from (("group", rec) for rec in g.groups())
    yield from (("user", rec) for rec in g.users())
    yield from (("customfield", rec) for rec in g.customfields())


def generate(contacts: int, seed: int) -> dict[str, list[Record]]:
    """Every record of a seeded account, per resource name, in pull order."""
    out: dict[str, list[Record]] = {name: [] for name in PULL_ORDER}
    for name, rec in iter_records(contacts, seed):
        out[name].append(rec)
    return out
