"""The real node's own network, mount and PID namespaces, made by this cluster on this machine.

Owns:
- the holder process: `pause` as PID 1 of the node's PID namespace (it reaps orphans, such as
  containerd's shims); when it ends, the kernel ends every process of the node, containers
  included, and the node's mounts and network namespace go with them. Its `unshare` parent
  dies with the process that started it (`setpriv --pdeathsig`) and takes the node along.
- the node's private /var/lib, /run and /var/log: folders of the state dir bind-mounted in
  the node's mount namespace, so the kubelet (whose device-plugin socket and container-log
  links have fixed paths there), containerd, its shims and the CNI plugins write nothing to
  the host's;
- six kernel settings the kubelet insists on (it sets them, or with protectKernelDefaults
  refuses to start): on this shared machine it would set vm.overcommit_memory=1 and
  kernel.panic_on_oops=1 for everything running here. In the node's mount namespace only,
  files holding the values it wants are bind-mounted over those /proc/sys entries;
- the link between the host and the node: a veth pair on a /30 of 10.250.0.0/16 that no
  address or route of the host uses. The host end is where the API server and S3 listen for
  the node; the node has no default route, so nothing from it goes beyond this machine;
- the cgroup root the kubelet puts pods under (`/whisperfleet-node-<holder pid>` in every
  cgroup v1 hierarchy), removed again on stop; roots left by a node whose holder is gone are
  swept at the next start.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.cluster.processes import ServerProcess
from tests.cluster.waiting import eventually

LINK_RANGE = ipaddress.ip_network("10.250.0.0/16")
CGROUP_MOUNTS = Path("/sys/fs/cgroup")
CGROUP_PREFIX = "whisperfleet-node-"
# What the kubelet wants these to be (pkg/kubelet/cm setupKernelTunables).
KUBELET_KERNEL_SETTINGS = {
    "vm/overcommit_memory": "1", "vm/panic_on_oom": "0", "kernel/panic": "10",
    "kernel/panic_on_oops": "1", "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}
PRIVATE_FOLDERS = ("/var/lib", "/run", "/var/log")


class SandboxError(RuntimeError):
    """The node's namespaces could not be made; the message quotes the command's error."""


def _run(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SandboxError(f"`{' '.join(argv)}` failed: {result.stderr.strip()}")
    return result.stdout


def _used_networks() -> list[ipaddress.IPv4Network]:
    used = []
    for entry in json.loads(_run(["ip", "-4", "-j", "route", "show", "table", "all"])):
        destination = entry.get("dst", "")
        if destination and destination != "default" and "." in destination:
            used.append(ipaddress.ip_network(destination, strict=False))
    for link in json.loads(_run(["ip", "-4", "-j", "addr"])):
        for info in link.get("addr_info", []):
            used.append(ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}",
                                             strict=False))
    return used


def _free_link_network() -> ipaddress.IPv4Network:
    used = _used_networks()
    candidates = list(LINK_RANGE.subnets(new_prefix=30))
    for network in random.sample(candidates, 64):
        if not any(network.overlaps(other) for other in used):
            return network
    raise SandboxError(f"no free /30 in {LINK_RANGE} for the node's link")


def _cgroup_hierarchies() -> list[Path]:
    """The mounted cgroup hierarchies (v1 controllers, and the v2 one of a hybrid host)."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, target, kind, *_ = line.split()
        if kind in ("cgroup", "cgroup2") and target.startswith(str(CGROUP_MOUNTS)):
            found.append(Path(target))
    return found


def _remove_cgroup_tree(root: Path) -> None:
    for directory in sorted((p for p in root.rglob("*") if p.is_dir()),
                            key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(FileNotFoundError):
            directory.rmdir()
    with contextlib.suppress(FileNotFoundError):
        root.rmdir()


def sweep_stale_cgroups() -> None:
    """Remove cgroup roots of nodes whose holder process is gone (a killed test run)."""
    for hierarchy in _cgroup_hierarchies():
        for root in hierarchy.glob(CGROUP_PREFIX + "*"):
            pid = root.name[len(CGROUP_PREFIX):]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                with contextlib.suppress(OSError):
                    _remove_cgroup_tree(root)


class NodeSandbox:
    """The node's namespaces and link; see the module docstring."""

    def __init__(self, state_dir: Path, pause: Path) -> None:
        self.state_dir = state_dir
        self.pause = pause
        self.log_path = state_dir / "holder.log"
        network = _free_link_network()
        host, node = list(network.hosts())
        self.host_ip, self.node_ip = str(host), str(node)
        self.prefix = network.prefixlen
        self.host_link = f"wf{random.randrange(16**8):08x}"[:15]
        self._holder: subprocess.Popen[bytes] | None = None
        self.holder_pid: int | None = None

    @property
    def cgroup_root(self) -> str:
        """The kubelet's cgroupRoot (it must exist before the kubelet starts)."""
        assert self.holder_pid is not None
        return f"/{CGROUP_PREFIX}{self.holder_pid}"

    def _holder_script(self) -> str:
        lines = ["set -e"]
        for folder in PRIVATE_FOLDERS:
            private = self.state_dir / folder.strip("/").replace("/", "-")
            private.mkdir(parents=True, exist_ok=True)
            lines.append(f"mount --bind '{private}' '{folder}'")
        settings = self.state_dir / "kernel-settings"
        settings.mkdir(parents=True, exist_ok=True)
        for name, value in KUBELET_KERNEL_SETTINGS.items():
            holder = settings / name.replace("/", ".")
            holder.write_text(value + "\n")
            lines.append(f"mount --bind '{holder}' '/proc/sys/{name}'")
        lines += ["ip link set lo up", "echo 1 > /proc/sys/net/ipv4/ip_forward",
                  f"touch '{self.state_dir / 'ready'}'", f"exec '{self.pause}'"]
        return "\n".join(lines)

    def start(self) -> None:
        sweep_stale_cgroups()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            # If the test process dies (even by SIGKILL), `unshare` gets SIGKILL, and its
            # --kill-child takes the whole node with it.
            self._holder = subprocess.Popen(
                ["setpriv", "--pdeathsig", "KILL", "--",
                 "unshare", "--net", "--mount", "--pid", "--fork", "--kill-child",
                 "--propagation", "private", "--mount-proc", "sh", "-c", self._holder_script()],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

        def ready() -> SandboxError | bool:
            assert self._holder is not None
            if self._holder.poll() is not None:
                return SandboxError("the node's namespaces could not be made: "
                                    + self.log_path.read_text(errors="replace"))
            return (self.state_dir / "ready").exists()

        outcome = eventually(ready, timeout=30, what="the node's namespaces")
        if isinstance(outcome, SandboxError):
            raise outcome
        # The holder is unshare's only child, PID 1 inside.
        children = Path(f"/proc/{self._holder.pid}/task/{self._holder.pid}/children")
        self.holder_pid = int(children.read_text().split()[0])
        self._make_link()
        self._make_cgroup_root()

    def _make_link(self) -> None:
        assert self.holder_pid is not None
        _run(["ip", "link", "add", self.host_link, "type", "veth", "peer", "name", "eth0",
              "netns", str(self.holder_pid)])
        _run(["ip", "addr", "add", f"{self.host_ip}/{self.prefix}", "dev", self.host_link])
        _run(["ip", "link", "set", self.host_link, "up"])
        self.run(["ip", "addr", "add", f"{self.node_ip}/{self.prefix}", "dev", "eth0"])
        self.run(["ip", "link", "set", "eth0", "up"])

    def _make_cgroup_root(self) -> None:
        for hierarchy in _cgroup_hierarchies():
            root = hierarchy / self.cgroup_root.lstrip("/")
            root.mkdir(exist_ok=True)
            if (hierarchy / "cpuset.cpus").exists():  # a new cpuset starts empty
                for name in ("cpuset.cpus", "cpuset.mems"):
                    (root / name).write_text((hierarchy / name).read_text())

    def enter(self, argv: list[str]) -> list[str]:
        """`argv` run inside the node's namespaces (a new process of its PID namespace)."""
        assert self.holder_pid is not None, "the sandbox is not started"
        return ["nsenter", "-t", str(self.holder_pid), "-n", "-m", "-p", "--", *argv]

    def run(self, argv: list[str]) -> str:
        """Run `argv` inside the node and return its stdout; SandboxError if it fails."""
        return _run(self.enter(argv))

    def server(self, name: str, argv: list[str], log_path: Path,
               env: dict[str, str] | None = None) -> ServerProcess:
        """A long-running node component (not started yet)."""
        return ServerProcess(name, self.enter(argv), log_path, env=env)

    def stop(self) -> None:
        """End every process of the node, then remove its cgroups (its link goes with it)."""
        if self._holder is not None and self._holder.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._holder.pid, signal.SIGKILL)
            self._holder.wait(timeout=30)
        if self.holder_pid is not None:
            deadline = time.monotonic() + 30
            for hierarchy in _cgroup_hierarchies():
                root = hierarchy / self.cgroup_root.lstrip("/")
                while root.exists():
                    try:
                        _remove_cgroup_tree(root)
                    except OSError:  # still busy: the killed processes are being reaped
                        if time.monotonic() > deadline:
                            break
                        time.sleep(0.2)
        with contextlib.suppress(subprocess.CalledProcessError, FileNotFoundError):
            subprocess.run(["ip", "link", "del", self.host_link], capture_output=True,
                           check=False)
        self._holder = None

    def remove_state(self) -> None:
        """Remove the node's folders in the background: containerd's images unpacked there
        are thousands of files (the runner image alone about 1.2 GB)."""
        if not self.state_dir.exists():
            return
        trash = Path(tempfile.gettempdir()) / f".whisperfleet-node-removed-{self.host_link}"
        try:
            self.state_dir.rename(trash)
        except OSError:  # another file system: remove it here and now
            shutil.rmtree(self.state_dir, ignore_errors=True)
            return
        subprocess.Popen(["rm", "-rf", "--one-file-system", str(trash)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
