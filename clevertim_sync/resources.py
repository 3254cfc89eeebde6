"""The resource registry: what each Clevertim resource looks like and how it maps to SQL.

Owns: every resource's API name, table name, properties (API name, column name, kind, read-only,
what it points at), which list-valued properties become child tables, the pull order (parents
first), and the validation of a local edit before it is queued.

The emulator, the schema, the diff, the writeback queue and the reports all read this one table of
facts, so a property is described once, here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any


class Kind(Enum):
    """The JSON shape of a property, and so its SQL type and its validation."""

    STR = "str"  # a string (nullable)
    INT = "int"  # an integer (nullable)
    BOOL = "bool"
    DECIMAL = "decimal"  # a decimal number written as a string: opportunity.value
    TIMESTAMP = "timestamp"  # ISO-8601 UTC string such as 2017-01-02T05:22:12Z
    DATE_PARTS = "date_parts"  # {y, mo, d, h?, mi?}: task start and end
    REF = "ref"  # an integer id of another record, or null; may dangle (hidden from this token)
    # The id of a record of a text-id resource (a file's parentId: the folder "f1001"), or null:
    # kept as text whatever its spelling (5 -> "5"), so it joins that resource's text `id`.
    TEXT_REF = "text_ref"
    STR_LIST = "str_list"  # list of strings: emails, websites, tags -> child table
    INT_LIST = "int_list"  # list of ids (server-computed back-references, group members)
    PHONES = "phones"  # list of {type, no} -> child table
    SMIDS = "smids"  # list of {type, smid} -> child table
    CUSTOM_FIELDS = "custom_fields"  # {"<customfield id>": str | list[str]} -> child table
    JSON = "json"  # any other JSON value, kept as JSON


@dataclass(frozen=True)
class Prop:
    """One property of a resource as the API names it, and its column in the mirror."""

    api: str
    column: str
    kind: Kind
    read_only: bool = False
    # For REF (and INT_LIST back-references): the resource(s) the id points at.
    # "customer" means a contact or a company: they share one id space in Clevertim.
    target: str | None = None
    # List-valued properties that become a child table name it here ("emails", "phones", ...).
    # An INT_LIST with a child table (a record's `files`) holds ids of `target`, in a column
    # named `column` typed as that resource's ids (text for documents).
    # A REF with a child table may hold several ids (`[33, 43]`): its column keeps the id when it
    # holds exactly one, else NULL, and the child table always has every id.
    child_table: str | None = None
    # A small closed set of allowed values, checked on local edits (None: anything of the kind).
    choices: frozenset[str] | None = None
    # The server's values form a small closed set (a status, a currency code, a type label; for
    # phones and social ids: the `type` of their entries): the probe's report and a capture may
    # copy such values as they are. Every other value is personal until declared here.
    closed: bool = False


@dataclass(frozen=True)
class Resource:
    """One API resource: endpoint `/{name}`, mirrored into table `{table}`."""

    name: str  # API name and path segment: "contact"
    table: str  # mirror table: "contacts"
    props: tuple[Prop, ...]
    writable: bool = True
    updatable: bool = True  # comments answer 501 to a PUT
    # A create needs at least one of each inner tuple: (("fn", "ln"),) means fn or ln.
    required_on_create: tuple[tuple[str, ...], ...] = ()
    # Parents come first in a pull and in dependent creates.
    parents: tuple[str, ...] = ()
    # "int": ids are integers (a numeric string "445" is 445, a word is no id). "text": ids are
    # kept as the text the API gives ("f1001"; an integer 7 is "7"), in the table, history, diff,
    # exports and backups alike.
    id_kind: str = "int"
    # The endpoint may be missing for an account or a token (an older plan, no rights): a 404,
    # 400 or 501 marks the resource unavailable, not failed, and it is retried at a slow interval.
    optional: bool = False
    by_api: Mapping[str, Prop] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_api", {p.api: p for p in self.props})

    @property
    def path(self) -> str:
        return f"/{self.name}"

    @property
    def writable_props(self) -> tuple[Prop, ...]:
        return tuple(p for p in self.props if not p.read_only)

    @property
    def child_props(self) -> tuple[Prop, ...]:
        return tuple(p for p in self.props if p.child_table is not None)

    @property
    def ref_props(self) -> tuple[Prop, ...]:
        return tuple(p for p in self.props if p.kind is Kind.REF)

    @property
    def text_ids(self) -> bool:
        return self.id_kind == "text"


# --- the properties every entry carries -------------------------------------------------------

COMMON: tuple[Prop, ...] = (
    Prop("ao", "added_at", Kind.TIMESTAMP, read_only=True),
    Prop("lm", "modified_at", Kind.TIMESTAMP, read_only=True),
    Prop("is_private", "is_private", Kind.BOOL),
    Prop("gid", "group_mask", Kind.INT),
    Prop("puser", "private_user_id", Kind.REF, target="user"),
)

CUSTOMER_TYPES = frozenset("CPSREONTDXIMAVWLFH")
ACTIVITY_TYPES = frozenset({"Email", "TO DO", "Meeting", "Call", "Follow up", "Appointment", "Not set"})
RECURRENCES = frozenset("NDWMY")
NOTE_TYPES_WRITABLE = frozenset("NSM")  # 'E' (dropbox email) is set by the service only


def _document_props(owner: str) -> tuple[Prop, ...]:
    """A record's attached files and linked files: server-computed lists with child tables
    (`contact_files(owner_id, position, file_id)`), joinable to `files` and `linked_files`."""
    return (
        Prop("files", "file_id", Kind.INT_LIST, read_only=True, target="file", child_table=f"{owner}_files"),
        Prop(
            "lfiles",
            "linked_file_id",
            Kind.INT_LIST,
            read_only=True,
            target="linkedfile",
            child_table=f"{owner}_linked_files",
        ),
    )


def _customer_props(*, company: bool) -> tuple[Prop, ...]:
    """Contacts and companies share most properties; the names differ."""
    kind_of = "company" if company else "contact"
    names: tuple[Prop, ...] = (
        (Prop("cn", "name", Kind.STR),)
        if company
        else (
            Prop("fn", "first_name", Kind.STR),
            Prop("ln", "last_name", Kind.STR),
            Prop("title", "title", Kind.STR),
            Prop("companyId", "company_id", Kind.REF, target="company"),
        )
    )
    return (
        *names,
        Prop("description", "description", Kind.STR),
        # Fixed by the resource (a contact is not a company): the API does not change it.
        Prop("is_company", "is_company", Kind.BOOL, read_only=True),
        Prop("email", "email", Kind.STR_LIST, child_table=f"{kind_of}_emails"),
        Prop("phones", "phones", Kind.PHONES, child_table=f"{kind_of}_phones", closed=True),
        Prop("website", "website", Kind.STR_LIST, child_table=f"{kind_of}_websites"),
        Prop("address", "address", Kind.STR),
        Prop("city", "city", Kind.STR),
        Prop("postcode", "postcode", Kind.STR),
        Prop("region", "region", Kind.STR),
        Prop("country", "country", Kind.STR),
        Prop("smids", "social_ids", Kind.SMIDS, child_table=f"{kind_of}_social_ids", closed=True),
        Prop("ctype", "customer_type", Kind.STR, choices=CUSTOMER_TYPES, closed=True),
        Prop("cf", "custom_fields", Kind.CUSTOM_FIELDS, child_table=f"{kind_of}_custom_values"),
        Prop("tags", "tags", Kind.STR_LIST, child_table=f"{kind_of}_tags"),
        Prop("notes", "note_ids", Kind.INT_LIST, read_only=True, target="note"),
        Prop("opportunities", "opportunity_ids", Kind.INT_LIST, read_only=True, target="opportunity"),
        Prop("tasks", "task_ids", Kind.INT_LIST, read_only=True, target="task"),
        Prop("cases", "case_ids", Kind.INT_LIST, read_only=True, target="case"),
        *_document_props(kind_of),
        Prop("lc", "last_contacted_at", Kind.TIMESTAMP, read_only=True),
        Prop("cphoto", "photo", Kind.STR, read_only=True),
        *COMMON,
    )


# The documents (the vendor client's file.py): read-only, text ids, and missing for some accounts.
DOCUMENTS: tuple[Resource, ...] = (
    Resource(
        name="folder",
        table="folders",
        props=(
            Prop("name", "name", Kind.STR),
            Prop("parentId", "parent_id", Kind.TEXT_REF, target="folder"),  # null: the root
            Prop("is_dir", "is_dir", Kind.BOOL),
            *COMMON,
        ),
        writable=False,
        id_kind="text",
        optional=True,
    ),
    Resource(
        name="file",
        table="files",
        props=(
            Prop("name", "name", Kind.STR),
            Prop("parentId", "parent_id", Kind.TEXT_REF, target="folder"),
            *COMMON,
        ),
        writable=False,
        parents=("folder",),
        id_kind="text",
        optional=True,
    ),
    Resource(
        name="linkedfile",
        table="linked_files",
        props=(
            Prop("name", "name", Kind.STR),
            Prop("sys", "system", Kind.STR, closed=True),  # D: Dropbox, G: Google Drive
            Prop("size", "size", Kind.INT),
            Prop("link", "link", Kind.STR),  # the file's URL in that system
            Prop("icon", "icon", Kind.STR),
            *COMMON,
        ),
        writable=False,
        id_kind="text",
        optional=True,
    ),
)

RESOURCES: tuple[Resource, ...] = (
    Resource(
        name="customfield",
        table="custom_fields",
        props=(
            Prop("name", "name", Kind.STR),
            Prop("fullname", "full_name", Kind.STR),
            Prop(
                "elemType",
                "element_type",
                Kind.STR,
                choices=frozenset(
                    {
                        "input",
                        "select",
                        "date",
                        "user",
                        "state",
                        "country",
                        "region",
                        "contact",
                        "company",
                        "case",
                        "opportunity",
                        "currency",
                    }
                ),
                closed=True,
            ),
            Prop("modelType", "model_types", Kind.JSON, closed=True),
            Prop("multiple", "multiple", Kind.BOOL),
            Prop("values", "allowed_values", Kind.JSON),
            *COMMON,
        ),
        required_on_create=(("name",), ("elemType",)),
    ),
    Resource(
        name="user",
        table="users",
        props=(
            Prop("user", "name", Kind.STR),
            Prop("email", "email", Kind.STR),
            Prop("is_owner", "is_owner", Kind.BOOL),
            Prop("is_admin", "is_admin", Kind.BOOL),
            Prop("permissions", "permissions", Kind.JSON, closed=True),
            Prop("pending", "pending", Kind.BOOL),
            *COMMON,
        ),
        writable=False,
    ),
    Resource(
        name="group",
        table="groups",
        props=(
            Prop("name", "name", Kind.STR),
            Prop("gid", "group_bit", Kind.INT),
            Prop("users", "user_ids", Kind.INT_LIST, target="user"),
            *tuple(p for p in COMMON if p.api != "gid"),
        ),
        writable=False,
        parents=("user",),
    ),
    Resource(
        name="company",
        table="companies",
        props=_customer_props(company=True),
        required_on_create=(("cn",),),
        parents=("customfield", "user"),
    ),
    Resource(
        name="contact",
        table="contacts",
        props=_customer_props(company=False),
        required_on_create=(("fn", "ln"),),
        parents=("customfield", "user", "company"),
    ),
    Resource(
        name="opportunity",
        table="opportunities",
        props=(
            Prop("name", "name", Kind.STR),
            Prop("description", "description", Kind.STR),
            Prop("status", "status", Kind.STR, closed=True),
            Prop("leadUser", "lead_user_id", Kind.REF, target="user"),
            Prop("value", "value", Kind.DECIMAL),
            Prop("currency", "currency", Kind.STR, closed=True),
            Prop("cust", "customer_id", Kind.REF, target="customer"),
            Prop("tags", "tags", Kind.STR_LIST, child_table="opportunity_tags"),
            Prop("cf", "custom_fields", Kind.CUSTOM_FIELDS, child_table="opportunity_custom_values"),
            Prop("tasks", "task_ids", Kind.INT_LIST, read_only=True, target="task"),
            Prop("notes", "note_ids", Kind.INT_LIST, read_only=True, target="note"),
            Prop("userId", "created_by_user_id", Kind.REF, read_only=True, target="user"),
            *_document_props("opportunity"),
            *COMMON,
        ),
        required_on_create=(("name",),),
        parents=("customfield", "user", "company", "contact"),
    ),
    Resource(
        name="case",
        table="cases",
        props=(
            Prop("name", "name", Kind.STR),
            Prop("description", "description", Kind.STR),
            Prop("leadUser", "lead_user_id", Kind.REF, target="user"),
            Prop("cust", "customer_id", Kind.REF, target="customer"),
            Prop("tags", "tags", Kind.STR_LIST, child_table="case_tags"),
            Prop("cf", "custom_fields", Kind.CUSTOM_FIELDS, child_table="case_custom_values"),
            Prop("tasks", "task_ids", Kind.INT_LIST, read_only=True, target="task"),
            Prop("notes", "note_ids", Kind.INT_LIST, read_only=True, target="note"),
            *_document_props("case"),
            *COMMON,
        ),
        required_on_create=(("name",),),
        parents=("customfield", "user", "company", "contact"),
    ),
    Resource(
        name="task",
        table="tasks",
        props=(
            Prop("name", "name", Kind.STR),
            Prop("location", "location", Kind.STR),
            Prop("atype", "activity_type", Kind.STR, choices=ACTIVITY_TYPES, closed=True),
            Prop("startDate", "start_at", Kind.DATE_PARTS),
            Prop("endDate", "end_at", Kind.DATE_PARTS),
            # The vendor client models these three as lists of ids.
            Prop("cust", "customer_id", Kind.REF, target="customer", child_table="task_customers"),
            Prop("case", "case_id", Kind.REF, target="case", child_table="task_cases"),
            Prop("opp", "opportunity_id", Kind.REF, target="opportunity", child_table="task_opportunities"),
            Prop("aUserId", "assigned_user_id", Kind.REF, target="user"),
            Prop("userId", "created_by_user_id", Kind.REF, read_only=True, target="user"),
            Prop("is_completed", "is_completed", Kind.BOOL),
            Prop("is_deleted", "is_deleted", Kind.BOOL),
            Prop("rec", "recurrence", Kind.STR, choices=RECURRENCES, closed=True),
            Prop("recevery", "recurrence_every", Kind.INT),
            Prop("recopts", "recurrence_options", Kind.JSON),
            Prop("comments", "comment_ids", Kind.INT_LIST, read_only=True, target="comment"),
            *COMMON,
        ),
        required_on_create=(("name",),),
        parents=("user", "company", "contact", "opportunity", "case"),
    ),
    Resource(
        name="note",
        table="notes",
        props=(
            Prop("desc", "body", Kind.STR),
            Prop("hl", "headline", Kind.STR, read_only=True),
            Prop("type", "note_type", Kind.STR, choices=NOTE_TYPES_WRITABLE, closed=True),
            # A note can be filed under several contacts and companies (the vendor's help and
            # client: 'cust': [33, 43, 53]). Its case and opportunity get child tables too: the
            # same filing screen sets them, the vendor client's reference type is the same, and
            # a list there would otherwise leave the note out of a case's or opportunity's count.
            Prop("cust", "customer_id", Kind.REF, target="customer", child_table="note_customers"),
            Prop("case", "case_id", Kind.REF, target="case", child_table="note_cases"),
            Prop(
                "opportunity",
                "opportunity_id",
                Kind.REF,
                target="opportunity",
                child_table="note_opportunities",
            ),
            Prop("email", "email", Kind.JSON, read_only=True),
            Prop("userId", "created_by_user_id", Kind.REF, read_only=True, target="user"),
            Prop("comments", "comment_ids", Kind.INT_LIST, read_only=True, target="comment"),
            *_document_props("note"),
            *COMMON,
        ),
        required_on_create=(("desc",),),
        parents=("user", "company", "contact", "opportunity", "case"),
    ),
    Resource(
        name="comment",
        table="comments",
        props=(
            Prop("comment", "body", Kind.STR),
            Prop("nid", "note_id", Kind.REF, target="note", child_table="comment_notes"),
            Prop("tid", "task_id", Kind.REF, target="task", child_table="comment_tasks"),
            Prop("userId", "created_by_user_id", Kind.REF, read_only=True, target="user"),
            *COMMON,
        ),
        updatable=False,
        required_on_create=(("comment",),),
        parents=("user", "note", "task"),
    ),
    # Last: nothing else's pull depends on them, and an account without them changes no other order.
    *DOCUMENTS,
)

BY_NAME: Mapping[str, Resource] = {r.name: r for r in RESOURCES}
TEXT_ID_RESOURCES: frozenset[str] = frozenset(r.name for r in RESOURCES if r.text_ids)
BY_TABLE: Mapping[str, Resource] = {r.table: r for r in RESOURCES}
# RESOURCES is already in pull order: every resource comes after its parents.
PULL_ORDER: tuple[str, ...] = tuple(r.name for r in RESOURCES)
CUSTOMER_RESOURCES = ("contact", "company")

# Server-computed back-reference lists: (parent resource, list property) <- (child, pointer).
BACK_REFERENCES: tuple[tuple[str, str, str, str], ...] = (
    *((cust, "notes", "note", "cust") for cust in CUSTOMER_RESOURCES),
    *((cust, "opportunities", "opportunity", "cust") for cust in CUSTOMER_RESOURCES),
    *((cust, "tasks", "task", "cust") for cust in CUSTOMER_RESOURCES),
    *((cust, "cases", "case", "cust") for cust in CUSTOMER_RESOURCES),
    ("case", "tasks", "task", "case"),
    ("case", "notes", "note", "case"),
    ("opportunity", "tasks", "task", "opp"),
    ("opportunity", "notes", "note", "opportunity"),
    ("task", "comments", "comment", "tid"),
    ("note", "comments", "comment", "nid"),
)


class UnknownResource(KeyError):
    """Raised by `get` for a name that is not a resource."""


def get(name: str) -> Resource:
    try:
        return BY_NAME[name]
    except KeyError:
        known = ", ".join(sorted(BY_NAME))
        raise UnknownResource(f"unknown resource {name!r}; known resources: {known}") from None


# --- validation of local edits ---------------------------------------------------------------

_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
_DATE_PART_KEYS = {"y", "mo", "d", "h", "mi"}


def is_int(value: Any) -> bool:
    """An integer, and not a bool (Python counts True as 1; no id or count here is ever a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def id_problem(resource: str, value: Any) -> str | None:
    """Why `value` cannot be the id of a `resource` record, or None: the one check of a record id
    handed to a write (an edit's target, a pushed answer folded in, a request's path).

    The registry says which ids a resource has (`id_kind`): integers, or text ("f1001", and 7 as
    "7"). A name the registry does not know has integer ids, as Clevertim's records do."""
    res = BY_NAME.get(resource)
    if res is not None and res.id_kind == "text":
        if (isinstance(value, str) and value.strip()) or is_int(value):
            return None
        return f"{value!r} is no id of a {res.name} (a non-empty text)"
    return None if is_int(value) else f"{value!r} is no integer id of a {resource}"


def _is_local_ref(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("local:")


def _kind_problem(prop: Prop, value: Any) -> str | None:
    """Why `value` is not a valid `prop` value, or None when it is."""
    if value is None:
        return None if prop.kind not in (Kind.BOOL,) else f"{prop.api} must be true or false, not null"
    k = prop.kind
    if k is Kind.STR:
        if not isinstance(value, str):
            return f"{prop.api} must be a string"
        if prop.choices is not None and value not in prop.choices:
            return f"{prop.api} must be one of {', '.join(sorted(prop.choices))}, not {value!r}"
        return None
    if k is Kind.REF and prop.child_table is not None and isinstance(value, list):
        # A queued create's local: name goes in alone, not in a list (claims resolves single refs).
        ok = bool(value) and all(is_int(v) for v in value)
        return None if ok else f"{prop.api} must be an integer id or a non-empty list of integer ids"
    if k in (Kind.INT, Kind.REF):
        many = " or a list of them" if prop.child_table is not None else ""
        return None if is_int(value) else f"{prop.api} must be an integer id{many}"
    if k is Kind.BOOL:
        return None if isinstance(value, bool) else f"{prop.api} must be true or false"
    if k is Kind.DECIMAL:
        if isinstance(value, bool) or not isinstance(value, str | int):
            return f'{prop.api} must be a decimal number written as a string, such as "4500"'
        try:
            if not Decimal(str(value)).is_finite():
                raise InvalidOperation
        except InvalidOperation:
            return f"{prop.api} must be a decimal number, not {value!r}"
        return None
    if k is Kind.TIMESTAMP:
        ok = isinstance(value, str) and _TIMESTAMP.match(value) is not None
        return None if ok else f"{prop.api} must be an ISO-8601 UTC timestamp like 2017-01-02T05:22:12Z"
    if k is Kind.DATE_PARTS:
        if not isinstance(value, dict) or not {"y", "mo", "d"} <= value.keys():
            return f"{prop.api} must be an object with integer y, mo, d (and optionally h, mi)"
        if not value.keys() <= _DATE_PART_KEYS or not all(is_int(v) for v in value.values()):
            return f"{prop.api} takes only integer y, mo, d, h, mi"
        return None
    if k is Kind.STR_LIST:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return None if ok else f"{prop.api} must be a list of strings"
    if k is Kind.INT_LIST:
        ok = isinstance(value, list) and all(is_int(v) for v in value)
        return None if ok else f"{prop.api} must be a list of integer ids"
    if k in (Kind.PHONES, Kind.SMIDS):
        inner = "no" if k is Kind.PHONES else "smid"
        ok = isinstance(value, list) and all(
            isinstance(v, dict) and isinstance(v.get(inner), str) and isinstance(v.get("type", ""), str)
            for v in value
        )
        return None if ok else f'{prop.api} must be a list of {{"type": ..., "{inner}": ...}} objects'
    if k is Kind.CUSTOM_FIELDS:
        ok = isinstance(value, dict) and all(
            str(key).isdigit()
            and (isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v)))
            for key, v in value.items()
        )
        return None if ok else f"{prop.api} must map custom field ids to a string or a list of strings"
    return None  # Kind.JSON: any JSON value


def edit_problems(
    resource_name: str,
    op: str,
    fields: Mapping[str, Any],
    *,
    local_refs: frozenset[str] = frozenset(),
) -> list[str]:
    """Every reason a local edit must be refused; an empty list means it may be queued.

    `op` is "create", "update" or "delete". A REF may also hold a local reference to a record
    created by an earlier queued create (a string such as "local:company:7"): `local_refs` lists
    the ones that exist, and any string starting with "local:" is accepted when it is None-checked
    later by the queue.
    """
    try:
        res = get(resource_name)
    except UnknownResource as exc:
        return [str(exc.args[0])]
    if op not in ("create", "update", "delete"):
        return [f"unknown operation {op!r}: use create, update or delete"]
    if not res.writable:
        return [f"{res.name} is read-only in the Clevertim API: it cannot be created, updated or deleted"]
    if op == "update" and not res.updatable:
        return [f"a {res.name} cannot be updated (the API answers 501): delete it and create a new one"]
    if op == "delete":
        return [f"a delete takes no fields, got {', '.join(sorted(fields))}"] if fields else []

    problems: list[str] = []
    for key, value in fields.items():
        if key == "id":
            problems.append("id is set by the server and cannot be written")
            continue
        prop = res.by_api.get(key)
        if prop is None:
            problems.append(f"{res.name} has no property {key!r}")
        elif key == "is_company":
            problems.append(
                "is_company cannot be written: it says whether the record is a company or a contact, "
                "which the API does not change (create a company or a contact instead)"
            )
        elif prop.read_only:
            problems.append(f"{key} is computed by the server (read-only) and cannot be written")
        elif prop.kind is Kind.REF and _is_local_ref(value):
            if local_refs and value not in local_refs:
                problems.append(f"{key} points at {value}, which is no queued create")
        else:
            problem = _kind_problem(prop, value)
            if problem:
                problems.append(problem)
    if not fields and op == "update":
        problems.append("an update needs at least one property to change")
    if op == "create":
        for alternatives in res.required_on_create:
            if not any(fields.get(a) not in (None, "") for a in alternatives):
                problems.append(f"a new {res.name} needs {' or '.join(alternatives)}")
        if res.name == "comment" and (fields.get("nid") is None) == (fields.get("tid") is None):
            problems.append("a comment must be on exactly one of a note (nid) or a task (tid)")
    return problems
