"""`EmulatorControl`: the Python client of the emulator's control surface (/_control/, httpx).

Owns: one method per control route, so tests act as a person in the web UI (create, update,
delete without the API's rules; set `lm` or leave it alone), read the full state, set faults,
read the request log, and reset the account. Works against an emulator in this process or in
another one (`clevertim-sync emulator`).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx
import orjson

from clevertim_sync.errors import ClevertimSyncError


class EmulatorControlError(ClevertimSyncError):
    """The control surface refused a request; `status` and `message` say why."""

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        self.method, self.path, self.status, self.message = method, path, status, message
        super().__init__(f"emulator control {method} {path} answered {status}: {message}")


class EmulatorControl:
    """Client of http://HOST:PORT/_control/. `root_url` may also be the API base URL (…/api)."""

    def __init__(self, root_url: str, *, timeout: float = 60.0) -> None:
        root = root_url.rstrip("/")
        root = root.removesuffix("/api")
        self.root_url = root
        # Plain HTTP on loopback: verify=False only skips building a TLS context (~0.1 s per client).
        self._http = httpx.Client(base_url=root + "/_control", timeout=timeout, verify=False)  # noqa: S501

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EmulatorControl:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        content = orjson.dumps(body) if body is not None else None
        response = self._http.request(method, path, content=content, params=params, headers=headers)
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            data = {"error": response.text[:200]}
        if response.status_code != 200:
            message = data.get("error", "") if isinstance(data, dict) else str(data)
            raise EmulatorControlError(method, path, response.status_code, message)
        return data

    # --- records ------------------------------------------------------------------------------

    def state(self, as_token: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """Every record per resource; with `as_token`, only what that token's user sees."""
        headers = {"X-As-Token": as_token} if as_token is not None else None  # never in a URL
        result: dict[str, list[dict[str, Any]]] = self._call("GET", "/state", headers=headers)
        return result

    def record(self, resource: str, record_id: int | str) -> dict[str, Any]:
        """One record as stored, whoever may see it."""
        result: dict[str, Any] = self._call("GET", f"/records/{resource}/{record_id}")
        return result

    def create(self, resource: str, record: dict[str, Any]) -> dict[str, Any]:
        """Create as the web UI would: no validation; `id`, `ao`, `lm`, `userId` may be given."""
        result: dict[str, Any] = self._call("POST", f"/records/{resource}", record)
        return result

    def update(
        self,
        resource: str,
        record_id: int | str,  # str: a folder's "f1001"
        fields: dict[str, Any],
        bump_lm: bool = True,
        *,
        unset: list[str] | tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """Change fields as the web UI would; `lm` as given in fields, else bumped unless
        bump_lm=False; properties named in `unset` are removed (missing, not null)."""
        params = {"bump_lm": "1" if bump_lm else "0"}
        if unset:
            params["unset"] = ",".join(unset)
        result: dict[str, Any] = self._call("PUT", f"/records/{resource}/{record_id}", fields, params=params)
        return result

    def delete(self, resource: str, record_id: int | str) -> None:
        self._call("DELETE", f"/records/{resource}/{record_id}")

    # --- faults, request log, reset, tokens ---------------------------------------------------

    def add_fault(self, **spec: Any) -> int:
        """Add a fault (see clevertim_sync.emulator.faults); returns its id."""
        return int(self._call("POST", "/faults", spec)["id"])

    def faults(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/faults")
        return result

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def quirks(self) -> list[str]:
        """The active quirks (clevertim_sync.emulator.quirks)."""
        result: list[str] = self._call("GET", "/quirks")["active"]
        return result

    def set_quirks(self, names: list[str] | tuple[str, ...]) -> list[str]:
        """Serve with exactly these quirks ("all": every one); returns the active ones."""
        result: list[str] = self._call("PUT", "/quirks", {"quirks": list(names)})["active"]
        return result

    def set_quirk(self, name: str, on: bool) -> list[str]:
        """Turn one quirk on or off; returns the active ones."""
        result: list[str] = self._call("PUT", f"/quirks/{name}", {"on": on})["active"]
        return result

    def requests(self) -> list[dict[str, Any]]:
        """API requests received, oldest first: method, path (/api/..., or /getcphoto/... for a
        photo, with `auth`: whether credentials came with it), resource, id, status
        (0: no answer sent), fault (the kind that struck, or None), body (the JSON received, or
        its text if not JSON, or None), ms (server time to the last byte), cpu_ms (the handler
        thread's CPU time). A request is listed as its answer starts to leave; its ms and cpu_ms
        are None until the last byte is handed to the socket."""
        result: list[dict[str, Any]] = self._call("GET", "/requests")
        return result

    def clear_requests(self) -> None:
        self._call("DELETE", "/requests")

    def reset(self, contacts: int | None = None, seed: int | None = None) -> None:
        """A fresh seeded account; faults, request log and extra tokens cleared."""
        spec: dict[str, Any] = {}
        if contacts is not None:
            spec["contacts"] = contacts
        if seed is not None:
            spec["seed"] = seed
        self._call("POST", "/reset", spec)

    def add_token(self, token: str, user_id: int, *, read_only: bool = False) -> None:
        """Let another token in, as user `user_id` (e.g. 3, whose private records the owner cannot see)."""
        self._call("POST", "/tokens", {"token": token, "user_id": user_id, "read_only": read_only})
