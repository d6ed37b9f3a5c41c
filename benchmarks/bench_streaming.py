"""Streaming installs on the lab target against local installs, and adaptive updates (issue 15).

    sudo .venv/bin/python -m benchmarks.bench_streaming [--size-mib 512] [--adaptive-mib 256] [--repeat N]

One boot of the pyrauc lab target, one run of each, side by side:

* local: ``rauc install`` of a crypt bundle (one raw image of random data, encrypted for a fresh
  device key) from a read-only scratch disk attached to the target;
* streamed: ``rauc install http://10.0.2.2:<port>/bench.raucb`` of the same bundle from nginx on
  the host (QEMU user networking); bytes fetched from nginx's access log;
* adaptive: install v2 (adaptive=block-hash-index) by URL, then v3, which differs from v2 in 5 %
  of its blocks (8 extents); bytes of v3 fetched against v3's payload.

Goals (issue 15): streamed within 1.3x of local; adaptive fetches <= 10 % of the payload. Under
TCG one install's time moves by 20 % between runs: ``--repeat N`` installs local and streamed N
times each, alternating, and reports the medians and every pair's ratio. The numbers are printed
(and written to results/bench-streaming.json); nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_install import _bundle, _scratch_disk, lab_target
from benchmarks.common import ROOT
from tests.helpers.webserver import Nginx, TlsFiles, bytes_served
from tests.lab.test_streaming import BLOCK, HOST, changed_image, payload_size, random_image

SLOT = "/dev/disk/by-partlabel/rootfs-b"
DROP = "sync; echo 3 > /proc/sys/vm/drop_caches"


def _adaptive_bundle(work: Path, www: Path, name: str, image: Path, pki: Path) -> Path:
    content = work / f"content-{name}"
    content.mkdir()
    (content / "rootfs.img").hardlink_to(image)
    (content / "manifest.raucm").write_text(
        f"[update]\ncompatible=pyrauc-qemux86-64\nversion={name}\n\n[bundle]\nformat=crypt\n\n"
        "[image.rootfs]\nfilename=rootfs.img\nadaptive=block-hash-index\n")
    from tests.helpers.bundles import pyrauc

    out = www / f"{name}.raucb"
    pyrauc("bundle", "--cert", pki / "signer.cert.pem", "--key", pki / "signer.key.pem", content, out, check=True)
    shutil.rmtree(content)
    return out


def _twice(requests: list[dict[str, Any]], name: str) -> int:
    """Bytes of ``name`` that nginx sent more than once (from the Range of each request)."""
    spans = sorted((int(a), int(b) + 1) for r in requests if name in r["request"] and r["status"] == 206
                   for a, b in [r["range"].removeprefix("bytes=").split("-")])
    twice, reach = 0, 0
    for start, end in spans:
        twice += max(0, min(end, reach) - start)
        reach = max(reach, end)
    return twice


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--adaptive-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=1, help="local and streamed installs, alternating")
    args = parser.parse_args()

    from labs import lab

    (ROOT / "results").mkdir(exist_ok=True)
    pki = lab.cache_dir() / "lab-pki"
    with tempfile.TemporaryDirectory(prefix="bench-streaming-", dir=ROOT / "results") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        www = work / "www"
        www.mkdir(mode=0o755)
        bundle, _image, key, cert = _bundle(work, args.size_mib, "crypt", pki)
        assert key is not None and cert is not None
        (www / "bench.raucb").hardlink_to(bundle)
        v2 = random_image(work / "v2.img", args.adaptive_mib, seed=2)
        v3 = work / "v3.img"
        changed = sum(n for _, n in changed_image(v2, v3, 0.05)) * BLOCK
        b2 = _adaptive_bundle(work, www, "adaptive-v2", v2, pki)
        b3 = _adaptive_bundle(work, www, "adaptive-v3", v3, pki)
        disk = _scratch_disk(work, {"bench.raucb": bundle})
        nginx = Nginx(www, work / "nginx", TlsFiles.make(work / "tls")).start()
        results: dict[str, Any] = {}
        try:
            with lab_target("pyrauc", disk, "bench-streaming") as strategy:
                ssh = strategy.ssh
                ssh.put(str(key), "/etc/rauc/crypt-key.pem")
                ssh.put(str(cert), "/etc/rauc/crypt-cert.pem")
                ssh.run_check("mkdir -p /mnt/bench && mount -o ro,noload /dev/disk/by-label/bench /mnt/bench")

                def timed_install(source: str) -> float:
                    ssh.run_check(DROP)
                    t0 = time.monotonic()
                    out, err, code = ssh.run(f"rauc install {source}", timeout=7200)
                    if code != 0:
                        raise SystemExit(f"install of {source} failed:\n" + "\n".join(out + err))
                    return time.monotonic() - t0

                base = f"http://{HOST}:{nginx.http_port}"
                local, streamed = [], []
                for _ in range(args.repeat):
                    local.append(timed_install("/mnt/bench/bench.raucb"))
                    nginx.clear_log()
                    streamed.append(timed_install(f"{base}/bench.raucb"))
                    requests = nginx.requests()
                    results["stream_fetched"] = bytes_served(requests, "bench.raucb")
                    results["stream_twice"] = _twice(requests, "bench.raucb")
                    results["stream_requests"] = len(requests)
                    helper = ssh.run_check("journalctl -u rauc -n 300 --no-pager -o cat | grep 'nbd server: .* READs' "
                                           "| tail -1 || true")
                    results["stream_helper"] = helper[-1].split("nbd server: ", 1)[-1] if helper else "n/a"
                results["local_runs"], results["stream_runs"] = local, streamed
                results["local_s"], results["stream_s"] = statistics.median(local), statistics.median(streamed)
                results["bundle_size"] = bundle.stat().st_size
                timed_install(f"{base}/{b2.name}")
                nginx.clear_log()
                results["adaptive_s"] = timed_install(f"{base}/{b3.name}")
                requests = nginx.requests()
                results["adaptive_fetched"] = bytes_served(requests, b3.name)
                results["adaptive_twice"] = _twice(requests, b3.name)
                results["adaptive_payload"] = payload_size(b3)
                results["adaptive_changed"] = changed
        finally:
            nginx.stop()

    accel = lab.choose_accel()
    mib = args.size_mib
    print(f"\n{mib} MiB raw image in an encrypted crypt bundle; {accel.label}, guest CPU {accel.cpu}")
    print(f"local install      {results['local_s']:8.1f} s  {mib / results['local_s']:6.1f} MiB/s")
    print(f"streamed install   {results['stream_s']:8.1f} s  {mib / results['stream_s']:6.1f} MiB/s   "
          f"x{results['stream_s'] / results['local_s']:.2f} of local (goal <= 1.3)")
    if args.repeat > 1:
        runs = zip(results["local_runs"], results["stream_runs"], strict=True)
        pairs = [f"{s_ / l_:.2f} ({l_:.1f}/{s_:.1f} s)" for l_, s_ in runs]
        print(f"  medians of {args.repeat} runs each; streamed/local per pair: {', '.join(pairs)}")
    print(f"  fetched {results['stream_fetched'] / (1 << 20):.1f} MiB of a {results['bundle_size'] / (1 << 20):.1f} "
          f"MiB bundle ({100 * results['stream_fetched'] / results['bundle_size']:.1f} %) in "
          f"{results['stream_requests']} requests; {results['stream_twice'] / (1 << 20):.1f} MiB of it fetched twice "
          "(last run)")
    print(f"  helper (last run): {results['stream_helper']}")
    share = results["adaptive_fetched"] / results["adaptive_payload"]
    print(f"adaptive v2 -> v3  {results['adaptive_s']:8.1f} s  fetched {results['adaptive_fetched'] / (1 << 20):.1f} "
          f"MiB of a {results['adaptive_payload'] / (1 << 20):.1f} MiB payload ({100 * share:.1f} %, goal <= 10 %; "
          f"changed blocks {100 * results['adaptive_changed'] / results['adaptive_payload']:.1f} %; "
          f"{results['adaptive_twice'] / (1 << 20):.1f} MiB fetched twice)")
    (ROOT / "results" / "bench-streaming.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
