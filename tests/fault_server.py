"""The service with a fault hook for tests only: the process dies right after a delivery
is committed, before its response is sent.

    python -m tests.fault_server --port P   (settings from TEMPLATE_SYNC_* variables)
"""

from __future__ import annotations

import os
import sys
from typing import Any

import uvicorn

from service.app import create_app
from service.config import Settings
from service.storage import Store, open_store

CRASH_EXIT_CODE = 17


async def open_crashing_store(url: str) -> Store:
    store = await open_store(url)
    record = store.record_delivery

    async def record_then_die(*args: Any, **kwargs: Any) -> Any:
        await record(*args, **kwargs)  # committed
        os._exit(CRASH_EXIT_CODE)  # the 200 never leaves

    store.record_delivery = record_then_die  # type: ignore[method-assign]
    return store


if __name__ == "__main__":
    port = int(sys.argv[sys.argv.index("--port") + 1])
    app = create_app(Settings.from_env(), store_opener=open_crashing_store)
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
