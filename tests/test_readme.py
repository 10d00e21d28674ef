"""The README's Quickstart, run as a new user would: its shell blocks in order, verbatim.

Only two things differ from a user's terminal: `make run` starts `template-sync serve` from the
already installed venv (the install itself is what `make test` just did), and the service
listens on a free port, written to `.env` first and replaced for `8000` in the commands.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.service_process import REPO, free_port

BIN = Path(sys.executable).parent
START_SERVER = r"""
start_server() {
  if [ -n "${SERVER:-}" ]; then kill "$SERVER"; wait "$SERVER" || true; fi
  template-sync migrate >>serve.log 2>&1
  template-sync serve >>serve.log 2>&1 &
  SERVER=$!
  for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && return 0
    sleep 0.1
  done
  echo "the service did not start:" >&2; cat serve.log >&2; return 1
}
trap 'if [ -n "${SERVER:-}" ]; then kill "$SERVER"; fi' EXIT
"""


def quickstart_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Quickstart") : text.index("\n### Tests")]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)


def as_script(blocks: list[str], port: int) -> str:
    lines = []
    for block in blocks:
        for line in block.splitlines():
            command = line.split("#")[0].strip()
            if command == "make run":
                lines.append("start_server")
            elif command.startswith("make "):
                continue  # `make test` is what is running this
            else:
                lines.append(line.replace("127.0.0.1:8000", f"127.0.0.1:{port}"))
    return "\n".join(["set -euo pipefail", START_SERVER, *lines])


def test_quickstart_runs_as_written(tmp_path: Path) -> None:
    blocks = quickstart_blocks()
    assert len(blocks) == 5, "the Quickstart's steps changed: update this test's reading of them"
    port = free_port()
    (tmp_path / ".env").write_text(f"TEMPLATE_SYNC_PORT={port}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPLATE_SYNC_")}
    env.update(PORT=str(port), PATH=f"{BIN}:{env['PATH']}", TEMPLATE_SYNC_POLL_ENABLED="false")
    # The README's `export PATH="$PWD/.venv/bin:$PATH"` names the clone's venv; here the
    # working directory is a scratch one, so the venv running this test stands in for it.
    script = as_script(blocks, port).replace('"$PWD/.venv/bin:$PATH"', f'"{BIN}:$PATH"')

    done = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr + (tmp_path / "serve.log").read_text()
    assert re.search(r"^200 ", done.stdout, flags=re.MULTILINE), done.stdout
    template = done.stdout.strip().splitlines()[-1]
    assert '"status":"APPROVED"' in template.replace(" ", ""), template
    assert '"status_source":"webhook"' in template.replace(" ", ""), template
    assert "WARN" in done.stdout + done.stderr  # doctor's warnings, with exit 0 (set -e)
