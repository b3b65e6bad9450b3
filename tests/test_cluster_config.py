"""cluster.yaml is a valid Ray cluster config (Ray's own schema and validator), keeps Ray's key order, has a
comment on every key line, opens no dashboard port to the world and holds no secrets (issue 6); and it makes a
cluster that autoscales (issue 16, item 5): the environment its setup_commands build loads Ray's AWS node provider
(boto3, from the aws extra), its nodes' Python runs the tested set, every node type names the security group the
user made (Ray's own admits SSH from everywhere), and head and workers boot one literal image."""
import copy
import json
import re
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pytest
import ray
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
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


UBUNTU_PYTHON = {"22.04": "3.10", "24.04": "3.12", "26.04": "3.14"}       # each release's python3


def node_types() -> dict:
    return CONFIG["available_node_types"]


def test_every_node_type_boots_one_literal_image():
    """Without an ImageId, `ray up` launches Ray's default AWS image (an Ubuntu 18.04 DLAMI, too old for this
    project). An SSM parameter (`resolve:ssm:.../latest/...`) is resolved by EC2 at every launch: a worker added
    weeks after the head could boot a newer image (and the head's Ray role would need ssm:GetParameters). So one
    AMI id, written once (a YAML anchor) and shared by every node type, or the placeholder until it is set."""
    images = {name: t["node_config"].get("ImageId", "") for name, t in node_types().items()}
    assert len(set(images.values())) == 1, images
    assert re.fullmatch(r"ami-(?:[0-9a-f]{8}|[0-9a-f]{17}|X{17})", images[CONFIG["head_node_type"]]), images
    line = next(x for x in TEXT.splitlines() if re.match(r"\s*ImageId: &", x))
    assert re.search(r"aws ssm get-parameter --region \S+ --name /aws/service/\S+ubuntu-\d\d\.04\S*/ami-id", line), line


def test_the_nodes_python_runs_the_tested_set():
    """setup_commands build the venv with the image's own python3.X, named, and every package constraints.txt pins
    (as installed here, at those versions) supports that Python — with Ubuntu 22.04's 3.10 the nodes could not
    install the tested set at all (numpy, pandas, scipy, pyarrow ... need 3.11)."""
    setup = " ".join(CONFIG["setup_commands"])
    versions = set(re.findall(r"\bpython(3\.\d+) -m venv\b", setup))
    assert len(versions) == 1 and "python3 -m venv" not in setup, setup
    python = versions.pop()
    line = next(x for x in TEXT.splitlines() if re.match(r"\s*ImageId: &", x))
    ubuntu = re.search(r"ubuntu-(\d\d\.04)", line).group(1)
    assert UBUNTU_PYTHON[ubuntu] == python, (ubuntu, python)
    refused = []
    for pin in (ROOT / "constraints.txt").read_text().splitlines():
        name = pin.split("#")[0].split("==")[0].strip()
        try:
            requires = distribution(name).metadata["Requires-Python"] if name else None
        except PackageNotFoundError:
            continue                                          # pinned for another platform or an extra not here
        if requires and not SpecifierSet(requires).contains(python):
            refused.append(f"{name} needs Python {requires}")
    assert not refused, f"the nodes' Python {python}: " + "; ".join(refused)


def test_the_nodes_environment_loads_rays_aws_node_provider(monkeypatch, tmp_path):
    """The head's autoscaler runs in the venv that setup_commands build (head_start_ray_commands start Ray from it),
    and Ray's AWS provider imports boto3: the extras setup_commands install there must bring it (Ray's default
    head_setup_commands, which pip-install boto3 for the system python, are replaced). This venv is built by the
    same pip command with the same constraints; every requirement of those extras holds here, and Ray builds its
    AWS node provider through the autoscaler's own entry, with no credentials, profile or metadata service."""
    tomllib = pytest.importorskip("tomllib")                  # Python 3.11+ (CI's)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    setup = " ".join(CONFIG["setup_commands"])
    extras = {e for group in re.findall(r'-e "\.\[([\w,-]+)\]" -c constraints\.txt', setup) for e in group.split(",")}
    assert "aws" in extras, setup
    assert "boto3" in {Requirement(r).name for r in project["optional-dependencies"]["aws"]}
    for extra in sorted(extras):
        for req in map(Requirement, project["optional-dependencies"][extra]):
            version = distribution(req.name).version              # PackageNotFoundError: the extra is not installed
            assert req.specifier.contains(version, prereleases=True), (extra, str(req), version)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no request to the instance metadata address
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    from ray.autoscaler._private.aws.node_provider import AWSNodeProvider
    from ray.autoscaler._private.providers import _get_node_provider

    provider = _get_node_provider(CONFIG["provider"], CONFIG["cluster_name"], use_cache=False)
    assert isinstance(provider, AWSNodeProvider)
    assert provider.ec2.meta.client.meta.region_name == CONFIG["provider"]["region"]
    assert provider.cache_stopped_nodes is False


def test_ssh_is_admitted_only_by_the_group_the_user_made(monkeypatch):
    """Ray makes its own security group for every node type whose node_config names no SecurityGroupIds, and that
    group always admits SSH from every address (provider.security_group.IpPermissions only add rules beside it).
    So every node type names the one group the user creates (SSH from their CIDR, all traffic between members),
    provider.security_group is absent (Ray would ignore it), and Ray's bootstrap step, run on this config, leaves
    the groups alone — while the same step with the worker's group left out would make Ray's default group."""
    from ray.autoscaler._private.aws import config as aws

    world = [r for r in aws._create_default_ssh_inbound_rules() if r["FromPort"] <= 22 <= r["ToPort"]]
    assert any(ip["CidrIp"].endswith("/0") for r in world for ip in r["IpRanges"]), world   # why groups are named
    groups = {name: t["node_config"].get("SecurityGroupIds") for name, t in node_types().items()}
    assert len({tuple(g or ()) for g in groups.values()}) == 1 and all(groups.values()), groups
    assert all(re.fullmatch(r"sg-(?:[0-9a-f]{8}|[0-9a-f]{17}|X{17})", g) for g in groups[CONFIG["head_node_type"]])
    assert "security_group" not in CONFIG["provider"]

    made = []

    def default_groups(config, types):                         # stands in for the AWS calls Ray would make
        made.append(sorted(types))
        return {t: SimpleNamespace(id="sg-made-by-ray") for t in types}

    monkeypatch.setattr(aws, "_upsert_security_groups", default_groups)
    config = aws._configure_security_group(prepare_config(copy.deepcopy(CONFIG)))
    assert made == [] and {n: t["node_config"]["SecurityGroupIds"] for n, t in
                           config["available_node_types"].items()} == groups
    without = prepare_config(copy.deepcopy(CONFIG))
    worker = next(n for n in without["available_node_types"] if n != CONFIG["head_node_type"])
    del without["available_node_types"][worker]["node_config"]["SecurityGroupIds"]
    aws._configure_security_group(without)
    assert made == [[worker]]                                  # the check above can fail


def test_every_node_starts_ray_with_token_auth_and_a_private_token():
    """Issue 15 item 4: token auth set explicitly on the head and every worker (not left to Ray's default), with
    the one token `ray get-auth-token --generate` made on the launching machine, copied to Ray's default path on
    each node; outputs the trials write are not world-writable (umask)."""
    assert CONFIG["file_mounts"]["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = next(c for c in CONFIG[key] if "ray start" in c)
        before = start[:start.index("ray start")]
        assert re.search(r"\bexport\b[^;]*\bRAY_AUTH_MODE=token\b", before), (key, start)
        assert "chmod 600 ~/.ray/auth_token" in before and "umask 022" in before, (key, start)
    assert "RAY_AUTH_TOKEN=" not in TEXT                     # the token itself never sits in this file


def test_nodes_install_the_tested_set():
    setup = " ".join(CONFIG["setup_commands"])
    assert "-c constraints.txt" in setup and "constraints.txt" not in " ".join(CONFIG["rsync_exclude"])
    assert (ROOT / "constraints.txt").is_file()
