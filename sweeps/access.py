"""Who can reach what a sweep starts and writes (issue 15, item 4): the local Ray's token, and file modes.

Token authentication. Ray (>= 2.52) checks a static bearer token on every GCS, raylet and dashboard request
when `RAY_AUTH_MODE=token` is in the environment of every Ray process. Ray 2.60 also turns it on by default
for a local `ray.init()`, but a default can change and a user's `RAY_AUTH_MODE=disabled` would turn it off:
a local Ray that ftsweep starts sets the mode itself. Ray reads the token from `RAY_AUTH_TOKEN`, else the file
named by `RAY_AUTH_TOKEN_PATH`, else `~/.ray/auth_token`. When there is none, Ray writes that file with the
process umask (usually 0644: every local user could read the token and run code in the cluster), and only
at the default path; we create it first, at the path Ray will read, readable by its owner only.
Connecting to an existing cluster (`--address`, `ftsweep submit/status/logs/stop`) follows Ray's own rule:
the client sends the token when `RAY_AUTH_MODE=token` is set, or with `--address auto` on a node that holds
a token file; see README "Clusters".

File modes. Sweep outputs are written by the driver, by Ray Tune and by the trials' worker processes, and
some writers are not ours (Tune's experiment state, Optuna's journal). One umask that clears the world-write
bit, set before Ray starts (its processes inherit it), covers them all; group write is the user's choice.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

MODE_ENV = "RAY_AUTH_MODE"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"


def no_world_write() -> None:
    """Clear the world-write bit of this process's umask (inherited by the local Ray it starts)."""
    os.umask(os.umask(0o022) | 0o002)


def token_file() -> Path:
    """The file Ray reads the token from when `RAY_AUTH_TOKEN` is not set (Ray's precedence)."""
    return Path(os.environ.get(TOKEN_PATH_ENV) or Path.home() / ".ray" / "auth_token").expanduser()


def ensure_private_token() -> None:
    """Make sure a token exists where Ray will read it, and that only its owner can read the file.

    Created whole or not at all: written to a private temp file, then hard-linked onto the name, which
    fails if another ftsweep created it meanwhile (that token wins; a running Ray may already use it)."""
    if os.environ.get(TOKEN_ENV):
        return
    path = token_file()
    if path.exists():
        st = path.stat()
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            path.chmod(0o600)                      # e.g. written by `ray get-auth-token --generate` as 0644
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))         # 256 bits, as Ray's own generator
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


def require_token_auth() -> None:
    """Turn token authentication on for this process and the Ray it is about to start, whatever
    `RAY_AUTH_MODE` said, with a private token in place. Ray caches the mode in its config object, which an
    earlier `import ray` or ray.init in this process may have filled: refresh it as Ray itself does."""
    ensure_private_token()
    os.environ[MODE_ENV] = "token"
    from ray._raylet import AuthenticationMode, AuthenticationTokenLoader, Config, get_authentication_mode
    if get_authentication_mode() != AuthenticationMode.TOKEN:
        Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()    # it may have cached "no token" before the file was made
