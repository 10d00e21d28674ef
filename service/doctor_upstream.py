"""The doctor's checks of upstream mode (design section 14): each upstream with one call,
which `upstream set --check` runs too, and each webhooks-only channel, with no call at all.
What a check means and how it renders is in service.doctor."""

from __future__ import annotations

import shlex

import aiohttp

from .config import PREFIX
from .crypto import DecryptionError, TokenCipher
from .doctor import Check
from .storage import Channel, Upstream
from .upstream import UpstreamClient, UpstreamError

UPSTREAM_TIMEOUT_S = 10.0
SET_UPSTREAM = (
    "template-sync upstream set --workspace {workspace} --url {url} --remote-workspace {remote} "
    "--token-env UPSTREAM_TOKEN"
)


def webhooks_only_check(channel: Channel, has_upstream: bool) -> Check:
    """A channel without a Meta token is fine while its workspace syncs through an upstream;
    without one, nothing can ever sync its pending templates."""
    name, workspace = f"WABA {channel.waba_id}: webhooks only", channel.workspace_id
    if has_upstream:
        detail = f"no Meta token: workspace {workspace} syncs through its upstream"
        return Check(name, "PASS", detail)
    detail = (
        f"no Meta token and workspace {workspace} has no upstream: its pending templates "
        "can never be synced (webhooks still update them)"
    )
    fix = "name the upstream it syncs through, with its token in UPSTREAM_TOKEN:\n"
    return Check(name, "WARN", detail, fix + _set_upstream(workspace, "BASE", "ID"))


async def upstream_checks(upstreams: list[Upstream], cipher: TokenCipher | None) -> list[Check]:
    """One call to each upstream (UpstreamClient.check), its token decrypted here."""
    if upstreams and cipher is None:
        detail = f"{len(upstreams)} upstream(s) not checked: no key can read their tokens"
        fix = "restore the key they were encrypted with (see the encryption keys check)"
        return [Check("upstreams", "FAIL", detail, fix)]
    if cipher is None or not upstreams:
        return []
    async with aiohttp.ClientSession() as session:
        return [await _one_upstream(session, cipher, upstream) for upstream in upstreams]


async def _one_upstream(
    session: aiohttp.ClientSession, cipher: TokenCipher, upstream: Upstream
) -> Check:
    try:
        token = cipher.decrypt(upstream.token_enc)
    except DecryptionError:
        detail = "stored token was encrypted under a key that is not configured"
        fix = (
            f"add that key back to {PREFIX}ENCRYPTION_KEYS (after the current one), or store "
            "the token again, with it in UPSTREAM_TOKEN:\n" + _set_again(upstream)
        )
        return Check(_upstream_name(upstream), "FAIL", detail, fix)
    return await check_upstream(session, upstream, token)


def upstream_client(
    session: aiohttp.ClientSession, url: str, remote_workspace: str, token: str
) -> UpstreamClient:
    """The client the check uses, with a short timeout; ValueError for a URL, remote
    workspace or token it cannot call with, which `upstream set` refuses before storing."""
    return UpstreamClient(session, url, remote_workspace, token, timeout_s=UPSTREAM_TIMEOUT_S)


async def check_upstream(session: aiohttp.ClientSession, upstream: Upstream, token: str) -> Check:
    """The one check of an upstream, run by `upstream set` and the doctor: one GET of its
    template list, whose answer says it is reachable, the token accepted and the remote
    workspace known."""
    try:
        client = upstream_client(session, upstream.url, upstream.remote_workspace, token)
        total = await client.check()
    except ValueError as error:
        return Check(_upstream_name(upstream), "FAIL", str(error), _set_again(upstream))
    except UpstreamError as error:
        return _upstream_failure(upstream, error)
    detail = f"reachable, token accepted, {total} template{'' if total == 1 else 's'}"
    return Check(_upstream_name(upstream), "PASS", detail)


def _upstream_failure(upstream: Upstream, error: UpstreamError) -> Check:
    """The verdict and fix for each way the check call fails; `message` never has the token."""
    name, url, remote = _upstream_name(upstream), upstream.url, upstream.remote_workspace
    if error.kind == "unauthorized":
        detail = f"the upstream refused the token ({error.message})"
        fix = (
            f"put a token the upstream accepts for its workspace {remote} in UPSTREAM_TOKEN, "
            "then:\n" + _set_again(upstream)
        )
        return Check(name, "FAIL", detail, fix)
    if error.kind == "not_found":
        detail = f"the upstream has no workspace {remote}: the remote workspace id is wrong"
        fix = (
            "give the workspace's id at the upstream (and check that the URL is the upstream's "
            "base URL), with the token in UPSTREAM_TOKEN:\n"
            + _set_upstream(upstream.workspace_id, url, "ID")
        )
        return Check(name, "FAIL", f"{detail} ({error.message})", fix)
    if error.kind == "network":
        fix = (
            "check the URL and that this host can reach it; to give another URL, with the "
            "token in UPSTREAM_TOKEN:\n" + _set_upstream(upstream.workspace_id, "BASE", remote)
        )
        return Check(name, "FAIL", f"unreachable at {url}: {error.message}", fix)
    if error.kind == "throttled":
        detail = f"the upstream asks to wait ({error.message})"
        return Check(name, "WARN", detail, "run doctor again in a few minutes")
    detail = f"the upstream answered badly: {error.message}"
    fix = f"check the upstream at {url} (its logs), and that the URL is its base URL"
    return Check(name, "FAIL", detail, fix)


def _upstream_name(upstream: Upstream) -> str:
    return f"upstream of workspace {upstream.workspace_id}"


def _set_again(upstream: Upstream) -> str:
    """`upstream set` with this upstream's own URL and remote workspace, ready to paste."""
    return _set_upstream(upstream.workspace_id, upstream.url, upstream.remote_workspace)


def _set_upstream(workspace_id: str, url: str, remote_workspace: str) -> str:
    quoted = {"workspace": workspace_id, "url": url, "remote": remote_workspace}
    return SET_UPSTREAM.format(**{key: shlex.quote(value) for key, value in quoted.items()})
