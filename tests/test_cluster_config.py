"""cluster.yaml is a valid Ray cluster config (Ray's own schema and validator), keeps Ray's key order, has a
comment on every key line, opens no dashboard port to the world and holds no secrets (issue 6)."""
import json
import re
from pathlib import Path

import jsonschema
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).parent.parent
TEXT = (ROOT / "cluster.yaml").read_text()
CONFIG = yaml.safe_load(TEXT)
SCHEMA = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())


def test_valid_against_rays_schema():
    jsonschema.validate(CONFIG, SCHEMA)
    validate_config(prepare_config(CONFIG))        # Ray's own check, after filling its defaults
    assert CONFIG["head_node_type"] in CONFIG["available_node_types"]
    gpu = [n for n, t in CONFIG["available_node_types"].items() if n != CONFIG["head_node_type"]]
    assert gpu and all(CONFIG["available_node_types"][n]["max_workers"] >= 1 for n in gpu)


def test_top_level_keys_in_rays_order():
    order = list(SCHEMA["properties"])
    keys = list(CONFIG)
    assert keys == sorted(keys, key=order.index)


def test_every_key_line_has_a_comment():
    for line in TEXT.splitlines():
        if re.match(r"^\s*[A-Za-z_][\w]*:", line):
            assert "#" in line, line


def test_no_public_dashboard_and_no_secrets():
    start = " ".join(CONFIG["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start and "0.0.0.0" not in TEXT
    assert not re.search(r"(aws_secret|secret_access_key|password|\b\d{12}\b|ssh_private_key)", TEXT, re.IGNORECASE)
    assert "torch==2.13.0" in " ".join(CONFIG["setup_commands"])          # torch first: no CUDA wheel surprise


def test_every_node_type_pins_a_current_image():
    """Without an ImageId, `ray up` launches Ray's default AWS image (an Ubuntu 18.04 DLAMI, older than this
    project's Python 3.10): set-up would fail on every node."""
    for name, node in CONFIG["available_node_types"].items():
        image = node["node_config"].get("ImageId", "")
        assert re.fullmatch(r"ami-[0-9a-f]{8,17}|resolve:ssm:/aws/service/\S+ubuntu-2[2-9]\.04\S*", image), (name, image)
