#!/usr/bin/env python3
"""A small network lab for demod's WAN tests (tests/faults/wan_test.sh): test hosts as network
namespaces, linked to one hub in a star, each link with its own rate, loss, delay and jitter.

The kernels we run on have no netem (nor fq, sfq, cake) and no loadable modules, so:
  rate          tbf on both ends of the link (each end shapes what it sends)
  loss          iptables `-m statistic --mode random` DROP of what each end of the link
                receives (INPUT), so each direction loses `loss` of its packets
  delay/jitter  this program's own bridge: the link is two TAP devices, one in each namespace,
                and the bridge reads each frame from one, holds it for delay (+/- jitter) and
                writes it to the other, both directions. A link without delay is a veth pair.
  down/up       `ip link set down|up` on a host's end of its links, or `cut`/`heal`: iptables
                DROP of everything on them (a black hole neither end notices)

Python 3 standard library only; needs root (CAP_NET_ADMIN), iproute2, iptables, /dev/net/tun.

  netlab.py probe
      exit 0 if a lab can be built here, else 1 with a one-line reason on stdout
  netlab.py up --state FILE [--tag TAG] [--hub NAME] --leaf NAME[:key=value,...] ...
      builds the lab, writes FILE (JSON: namespaces, interfaces, addresses; it appears whole
      once the lab is ready), then runs the bridge in the foreground. On SIGTERM, SIGINT,
      SIGHUP or the death of its parent it kills what still runs in the lab's namespaces and
      removes them (TAP devices, veths, qdiscs and iptables rules go with them).
      Link keys: rate (tc units: 5mbit; default none), burst (bytes; default ~5 ms of rate,
      at least 4 kB), limit_ms (tbf queue as delay, default 50), delay_ms (one way), jitter_ms
      (+/-, uniform), reorder (1: jittered frames may overtake; default 0 keeps order),
      loss (probability per packet and direction, 0..1).
  netlab.py link --state FILE HOST down|up|cut|heal
      HOST's end of its links (the hub: all of them)
  netlab.py down (--state FILE | --tag TAG)
      removes a lab whatever state it is in (idempotent): the backstop after a crash

Names: namespaces dmwan-<tag>-<host>, interfaces dw<tag>h<i> (hub side) and dw<tag>l<i>,
leaf i's link is 10.201.<i>.0/24 with the hub at .1 and the leaf at .2. The tag is random
(6 hex digits) unless given, so parallel labs never clash; addresses live only inside the
lab's namespaces.
"""

import argparse
import ctypes
import errno
import fcntl
import heapq
import json
import os
import random
import select
import shutil
import signal
import struct
import subprocess
import sys
import time

PREFIX = "dmwan-"
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
PR_SET_PDEATHSIG = 1
QUEUE_LIMIT_FRAMES = 4096  # per direction; a bridge backlog beyond this drops, as a router would


class LabError(Exception):
    pass


class Stop(Exception):
    pass


def run(*args, check=True):
    """Runs a command; LabError with its stderr if it fails and `check`."""
    result = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and result.returncode != 0:
        reason = result.stderr.strip() or f"exit {result.returncode}"
        raise LabError(f"{' '.join(args)}: {reason}")
    return result


def netns_exec(ns, *args, check=True):
    return run("ip", "netns", "exec", ns, *args, check=check)


def parse_leaf(text):
    name, _, spec = text.partition(":")
    if not name or not all(c.isalnum() or c in "_-" for c in name) or len(name) > 20:
        raise LabError(f"leaf name '{name}': letters, digits, '-' and '_', at most 20")
    link = {"rate": None, "burst": None, "limit_ms": 50.0, "delay_ms": 0.0, "jitter_ms": 0.0,
            "reorder": False, "loss": 0.0}
    for item in filter(None, spec.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in link:
            raise LabError(f"leaf '{name}': unknown link setting '{item}' (keys: {', '.join(link)})")
        try:
            if key == "rate":
                link[key] = value
            elif key == "burst":
                link[key] = int(value)
            elif key == "reorder":
                link[key] = value in ("1", "true", "yes")
            else:
                link[key] = float(value)
        except ValueError:
            raise LabError(f"leaf '{name}': {key}={value} is not a number") from None
    if not 0 <= link["loss"] < 1:
        raise LabError(f"leaf '{name}': loss must be in [0, 1), got {link['loss']}")
    if link["delay_ms"] < 0 or link["jitter_ms"] < 0 or link["jitter_ms"] > link["delay_ms"]:
        raise LabError(f"leaf '{name}': need 0 <= jitter_ms <= delay_ms")
    return name, link


def rate_bytes_per_second(rate):
    """tc's rate units (bit, kbit, mbit, gbit, bps, kbps, mbps) as bytes per second."""
    units = [("gbit", 1e9 / 8), ("mbit", 1e6 / 8), ("kbit", 1e3 / 8), ("bit", 1 / 8),
             ("gbps", 1e9), ("mbps", 1e6), ("kbps", 1e3), ("bps", 1)]
    for unit, factor in units:
        if rate.lower().endswith(unit):
            return float(rate[: -len(unit)]) * factor
    raise LabError(f"rate '{rate}': use tc's units, e.g. 5mbit")


def open_tap(name):
    """A TAP device in the root namespace, gone when the returned descriptor is closed."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


class Lab:
    def __init__(self, tag, hub, leaves, state_path):
        self.tag = tag
        self.hub = hub
        self.leaves = leaves  # [(name, link settings)]
        self.state_path = state_path
        self.tap_fds = []
        self.pairs = []  # (fd_in, fd_out, delay_s, jitter_s, reorder) per direction

    def ns(self, host):
        return f"{PREFIX}{self.tag}-{host}"

    def build(self):
        hub_ns = self.ns(self.hub)
        hosts = [self.hub] + [name for name, _ in self.leaves]
        for host in hosts:
            run("ip", "netns", "add", self.ns(host))
            run("ip", "-n", self.ns(host), "link", "set", "lo", "up")
            # No IPv6: no router solicitations or address detection on the links.
            netns_exec(self.ns(host), "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")
            netns_exec(self.ns(host), "sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1")
        state = {"tag": self.tag, "hub": {"name": self.hub, "netns": hub_ns}, "leaves": []}
        for i, (name, link) in enumerate(self.leaves, start=1):
            leaf_ns = self.ns(name)
            hub_if, leaf_if = f"dw{self.tag}h{i}", f"dw{self.tag}l{i}"
            if link["delay_ms"] > 0:
                hub_fd, leaf_fd = open_tap(hub_if), open_tap(leaf_if)
                self.tap_fds += [hub_fd, leaf_fd]
                run("ip", "link", "set", "dev", hub_if, "netns", hub_ns)
                run("ip", "link", "set", "dev", leaf_if, "netns", leaf_ns)
                delay, jitter = link["delay_ms"] / 1e3, link["jitter_ms"] / 1e3
                self.pairs.append((hub_fd, leaf_fd, delay, jitter, link["reorder"]))
                self.pairs.append((leaf_fd, hub_fd, delay, jitter, link["reorder"]))
            else:
                run("ip", "link", "add", hub_if, "netns", hub_ns, "type", "veth",
                    "peer", "name", leaf_if, "netns", leaf_ns)
            hub_addr, leaf_addr = f"10.201.{i}.1", f"10.201.{i}.2"
            for ns, dev, addr in ((hub_ns, hub_if, hub_addr), (leaf_ns, leaf_if, leaf_addr)):
                run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
                run("ip", "-n", ns, "link", "set", dev, "up")
                if link["rate"]:
                    rate = rate_bytes_per_second(link["rate"])
                    burst = link["burst"] or max(4096, int(rate * 0.005))
                    run("tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate",
                        link["rate"], "burst", str(burst), "latency", f"{link['limit_ms']}ms")
            if link["loss"] > 0:
                # On receipt at each end: OUTPUT sees GSO super-packets (tens of kB), so a drop
                # there would lose many wire packets at once; INPUT sees them one by one.
                for ns, dev in ((hub_ns, hub_if), (leaf_ns, leaf_if)):
                    netns_exec(ns, "iptables", "-A", "INPUT", "-i", dev, "-m", "statistic",
                               "--mode", "random", "--probability", f"{link['loss']:.6f}",
                               "-j", "DROP")
            state["leaves"].append({"name": name, "netns": leaf_ns, "index": i,
                                    "hub_if": hub_if, "leaf_if": leaf_if, "hub_addr": hub_addr,
                                    "leaf_addr": leaf_addr, "link": link})
        state["pid"] = os.getpid()
        tmp = self.state_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f, indent=1)
        os.rename(tmp, self.state_path)

    def bridge(self):
        """Forwards frames between each TAP pair after their delay, until Stop."""
        if not self.pairs:
            while True:
                signal.pause()
        out_of = {fd_in: (fd_out, delay, jitter, reorder)
                  for fd_in, fd_out, delay, jitter, reorder in self.pairs}
        last_release = {fd: 0.0 for fd in out_of}  # per direction, to keep order
        queued = {fd: 0 for fd in out_of}
        pending = []  # (release time, sequence, fd_in, frame)
        sequence = 0
        while True:
            timeout = max(0.0, pending[0][0] - time.monotonic()) if pending else None
            readable, _, _ = select.select(list(out_of), [], [], timeout)
            now = time.monotonic()
            for fd in readable:
                fd_out, delay, jitter, reorder = out_of[fd]
                for _ in range(64):
                    try:
                        frame = os.read(fd, 65536)
                    except BlockingIOError:
                        break
                    except OSError as e:  # a device set down
                        if e.errno in (errno.EIO, errno.EBADFD, errno.ENETDOWN):
                            break
                        raise
                    if queued[fd] >= QUEUE_LIMIT_FRAMES:
                        continue
                    release = now + delay + (random.uniform(-jitter, jitter) if jitter else 0.0)
                    if not reorder:
                        release = max(release, last_release[fd])
                        last_release[fd] = release
                    heapq.heappush(pending, (release, sequence, fd, frame))
                    sequence += 1
                    queued[fd] += 1
            now = time.monotonic()
            while pending and pending[0][0] <= now:
                _, _, fd, frame = heapq.heappop(pending)
                queued[fd] -= 1
                try:
                    os.write(out_of[fd][0], frame)
                except OSError:
                    pass  # the far end is down or full: the frame is lost, as on a wire

    def close_taps(self):
        for fd in self.tap_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.tap_fds = []


def lab_namespaces(tag):
    listed = run("ip", "netns", "list", check=False).stdout.split("\n")
    names = [line.split()[0] for line in listed if line.strip()]
    return [n for n in names if n.startswith(f"{PREFIX}{tag}-")]


def remove_lab(tag):
    """Kills what runs in the lab's namespaces (processes the test started there) and removes
    them, with every link, qdisc and rule inside. Idempotent."""
    namespaces = lab_namespaces(tag)
    for _ in range(50):
        alive = []
        for ns in namespaces:
            for pid in run("ip", "netns", "pids", ns, check=False).stdout.split():
                alive.append(int(pid))
        if not alive:
            break
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    for ns in namespaces:
        run("ip", "netns", "del", ns, check=False)
    return namespaces


def new_tag():
    while True:
        tag = "%06x" % random.getrandbits(24)
        if not lab_namespaces(tag):
            return tag


def command_up(args):
    leaves = [parse_leaf(text) for text in args.leaf]
    names = [args.hub] + [name for name, _ in leaves]
    if len(set(names)) != len(names):
        raise LabError("host names must differ")
    if len(leaves) > 250:
        raise LabError("at most 250 leaves")
    tag = args.tag or new_tag()
    if not all(c in "0123456789abcdef" for c in tag) or len(tag) > 6:
        raise LabError("tag: at most 6 lowercase hex digits")
    # The lab outlives nothing: if whoever started it dies (a test killed on timeout), it
    # removes itself.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:
        return 1

    def stop(signum, frame):
        raise Stop()

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, stop)
    lab = Lab(tag, args.hub, leaves, args.state)
    try:
        lab.build()
        lab.bridge()
    except Stop:
        return 0
    finally:
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        remove_lab(tag)
        lab.close_taps()


def load_state(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise LabError(f"cannot read the lab's state {path}: {e}") from None


def command_link(args):
    state = load_state(args.state)
    if args.host == state["hub"]["name"]:
        ends = [(state["hub"]["netns"], leaf["hub_if"]) for leaf in state["leaves"]]
    else:
        leaf = next((l for l in state["leaves"] if l["name"] == args.host), None)
        if leaf is None:
            raise LabError(f"no host '{args.host}' in the lab")
        ends = [(leaf["netns"], leaf["leaf_if"])]
    for ns, dev in ends:
        if args.action in ("down", "up"):
            run("ip", "-n", ns, "link", "set", dev, args.action)
        else:
            for chain, flag in (("INPUT", "-i"), ("OUTPUT", "-o")):
                rule = [chain, flag, dev, "-m", "comment", "--comment", "netlab-cut", "-j", "DROP"]
                if args.action == "cut":
                    netns_exec(ns, "iptables", "-I", *rule)
                else:
                    while netns_exec(ns, "iptables", "-D", *rule, check=False).returncode == 0:
                        pass
    return 0


def command_down(args):
    tag = args.tag or load_state(args.state)["tag"]
    removed = remove_lab(tag)
    if args.verbose:
        print(f"removed {len(removed)} namespaces")
    return 0


def command_probe(args):
    """Builds and removes a throwaway lab with one of everything; prints why not, if not."""
    if os.geteuid() != 0:
        print("not root: network namespaces, TAP devices and iptables need CAP_NET_ADMIN")
        return 1
    for tool in ("ip", "tc", "iptables"):
        if not shutil.which(tool):
            print(f"no '{tool}' command (Debian packages iproute2, iptables)")
            return 1
    if not os.path.exists("/dev/net/tun"):
        print("no /dev/net/tun: TAP devices are not available")
        return 1
    tag = new_tag()
    leaves = [parse_leaf("a:rate=10mbit,loss=0.01,delay_ms=1"), parse_leaf("b:rate=10mbit")]
    lab = Lab(tag, "hub", leaves, f"/tmp/{PREFIX}{tag}-probe.json")
    try:
        lab.build()
        if shutil.which("ping"):
            ping = netns_exec(lab.ns("b"), "ping", "-c", "1", "-W", "2", "10.201.2.1", check=False)
            if ping.returncode != 0:
                print(f"a veth link in a namespace does not carry packets: {ping.stdout[-200:]}")
                return 1
    except (LabError, OSError) as e:
        print(f"cannot build a network lab here: {e}")
        return 1
    finally:
        remove_lab(tag)
        lab.close_taps()
        try:
            os.unlink(lab.state_path)
        except OSError:
            pass
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("probe")
    up = sub.add_parser("up")
    up.add_argument("--state", required=True)
    up.add_argument("--tag")
    up.add_argument("--hub", default="hub")
    up.add_argument("--leaf", action="append", required=True)
    link = sub.add_parser("link")
    link.add_argument("--state", required=True)
    link.add_argument("host")
    link.add_argument("action", choices=["down", "up", "cut", "heal"])
    down = sub.add_parser("down")
    group = down.add_mutually_exclusive_group(required=True)
    group.add_argument("--state")
    group.add_argument("--tag")
    down.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    commands = {"probe": command_probe, "up": command_up, "link": command_link,
                "down": command_down}
    try:
        return commands[args.command](args)
    except LabError as e:
        print(f"netlab: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
