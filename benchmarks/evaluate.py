"""Metric throughput: images/s per metric at 512x512, ours beside pyiqa's where both exist.

    python benchmarks/evaluate.py                      # CPU (and CUDA when present)
    python benchmarks/evaluate.py --batch-size 32 --repeats 3 --device cpu --threads 2

Reference implementations: pyiqa's psnr / ssim (test_y_channel, ycbcr), niqe (run on the
same pristine parameters, written to a temporary .mat), piqe, and OpenCV's per-image
Laplacian variance for laplacian_var, the `brisque` package's own per-image scorer for brisque
(the same SVR); pyiqa's network metrics run only when their weights are already on disk. Ratio = ours / reference (> 1: ours is faster).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch


def photos(n: int) -> torch.Tensor:
    """n 512x512 real photos (scikit-image's, cropped and resized; Pillow bicubic)."""
    import skimage.data as sd
    from PIL import Image

    base = [sd.astronaut(), sd.chelsea(), sd.coffee(), sd.rocket()]
    out = []
    for i in range(n):
        img = base[i % len(base)]
        h, w = img.shape[:2]
        s = min(h, w) - 8 * (i // len(base) % 8)
        crop = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        out.append(np.array(Image.fromarray(crop).resize((512, 512), Image.BICUBIC)))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255.0  # (N, 3, 512, 512)


def rate(fn, n: int, repeats: int, sync) -> float:
    fn()  # warm-up
    sync()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return n / best


def reference_fns(device: str, tmp: str) -> dict:
    """metric -> callable(x, ref) of the reference implementation on ``device``."""
    refs = {}

    def lap_cv2(x, ref=None):
        import cv2

        arr = (x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return [cv2.Laplacian(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() for a in arr]

    refs["laplacian_var"] = ("opencv", lap_cv2)
    try:
        import brisque

        class PackageBrisque(brisque.BRISQUE):  # its scale_features breaks on NumPy 2: flatten first
            def scale_features(self, features):
                return super().scale_features(np.array([np.ravel(v)[0] for v in features], dtype=np.float64))

        pkg = PackageBrisque(url=False)

        def brisque_pkg(x, ref=None):
            arr = (x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
            return [pkg.score(a) for a in arr]

        refs["brisque"] = ("brisque-pkg", brisque_pkg)
    except ImportError:
        pass
    try:
        import pyiqa
        import scipy.io

        from osdhuman.iqa.niqe import load_pristine_params
    except ImportError:
        return refs
    kw = dict(test_y_channel=True, color_space="ycbcr")
    refs["psnr_y"] = ("pyiqa", pyiqa.create_metric("psnr", device=device, **kw))
    refs["ssim_y"] = ("pyiqa", pyiqa.create_metric("ssim", device=device, **kw))
    p = load_pristine_params()
    mat = os.path.join(tmp, "niqe_modelparameters.mat")
    scipy.io.savemat(mat, {"mu_prisparam": p["mu"][None], "cov_prisparam": p["cov"]})
    refs["niqe"] = ("pyiqa", pyiqa.create_metric("niqe", device=device, pretrained_model_path=mat))
    refs["piqe"] = ("pyiqa", pyiqa.create_metric("piqe", device=device))
    return refs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", action="append", help="cpu, cuda (default: cpu and cuda when present)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--metrics", default="psnr_y,ssim_y,niqe,brisque,piqe,laplacian_var,lpips,dists,clipiqa,maniqa,musiq")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    from osdhuman.iqa import MetricUnavailable, SetMetric, get_metric

    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    x = photos(args.batch_size)
    ref_img = torch.flip(x, dims=[0])
    print(f"{args.batch_size} images of 512x512, best of {args.repeats}, torch threads {torch.get_num_threads()}")
    print(f"{'metric':14s} {'device':6s} {'ours img/s':>11s} {'reference':>10s} {'ref img/s':>10s} {'ours/ref':>9s}")
    with tempfile.TemporaryDirectory() as tmp:
        for dev in devices:
            sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
            xd, rd = x.to(dev), ref_img.to(dev)
            refs = reference_fns(dev, tmp)
            for name in [m.strip() for m in args.metrics.split(",") if m.strip()]:
                try:
                    m = get_metric(name, backend="offline", device=dev)
                except MetricUnavailable:
                    try:
                        m = get_metric(name, backend="pyiqa", device=dev)  # network metrics: pyiqa only
                    except MetricUnavailable as exc:
                        print(f"{name:14s} {dev:6s} {'unavailable':>11s}  ({exc.reason[:70]})")
                        continue
                if isinstance(m, SetMetric):
                    continue
                fr = m.record.reference == "fr"
                ours = rate(lambda m=m, fr=fr, xd=xd, rd=rd: m(xd, rd) if fr else m(xd), len(x), args.repeats, sync)
                label, rr, ratio = "-", float("nan"), float("nan")
                if name in refs and m.record.backend == "offline":
                    label, fn = refs[name]
                    with torch.inference_mode():
                        rr = rate(lambda fn=fn, fr=fr, xd=xd, rd=rd: fn(xd, rd) if fr else fn(xd), len(x), args.repeats, sync)
                    ratio = ours / rr
                print(f"{name:14s} {dev:6s} {ours:11.1f} {label:>10s} {rr:10.1f} {ratio:9.2f}"
                      + ("" if m.record.backend == "offline" else "  (pyiqa backend)"))


if __name__ == "__main__":
    main()
