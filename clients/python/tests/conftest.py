"""These tests run against a live Gatehouse that test/python-client.test.ts (vitest) starts and fills
with users, clients and policy; it passes the URLs and credentials in the environment."""
import json
import os
from types import SimpleNamespace

import pytest

REQUIRED = ["GATEHOUSE_ISSUER", "GH_WEB_ID", "GH_WEB_SECRET", "GH_USER_TOKEN", "GH_USER_RESOURCE_TOKEN", "GH_USER_SUB", "GH_AGENT_ID", "GH_AGENT_SECRET",
            "GH_AGENT_NAME", "GH_ATTRIBUTES", "GH_RS_ID", "GH_RS_SECRET", "GH_RESOURCE", "LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"]


def pytest_configure(config):
    missing = [k for k in REQUIRED if not os.environ.get(k)]
    if missing:
        pytest.exit(f"run these through the Node test (npx vitest run test/python-client.test.ts); missing {', '.join(missing)}", returncode=2)


@pytest.fixture(scope="session")
def env():
    e = os.environ
    return SimpleNamespace(
        issuer=e["GATEHOUSE_ISSUER"],
        web_id=e["GH_WEB_ID"], web_secret=e["GH_WEB_SECRET"],
        user_token=e["GH_USER_TOKEN"], resource_token=e["GH_USER_RESOURCE_TOKEN"], user_sub=e["GH_USER_SUB"],
        agent_id=e["GH_AGENT_ID"], agent_secret=e["GH_AGENT_SECRET"], agent_name=e["GH_AGENT_NAME"],
        attributes=json.loads(e["GH_ATTRIBUTES"]),
        rs_id=e["GH_RS_ID"], rs_secret=e["GH_RS_SECRET"],
        resource=e["GH_RESOURCE"],
        livekit_url=e["LIVEKIT_URL"], livekit_key=e["LIVEKIT_API_KEY"], livekit_secret=e["LIVEKIT_API_SECRET"],
    )
