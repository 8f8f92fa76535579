"""Person detectors for ``folder:`` sources (paper 3.1: YOLO11 on LSDIR).

``OpenCVPersonDetector`` needs no download: models that ship inside opencv-python — the HOG
people detector (full standing bodies), the Haar upper-body cascade, and the Haar frontal-face
cascade whose face box is extended to a head-and-shoulders box (HOG alone misses portraits).
Known misses of this default: on ultralytics' ``bus.jpg`` it finds 1 of the 4 people (docs/reference.md
§curation); people seen from the side, small or partly hidden are often missed, so use it
for a trial, and YOLO11 (the paper's detector) for a real run.
``YOLOPersonDetector`` runs ultralytics YOLO (optional, AGPL) with the user's weights file,
one image per call, class 0 (person) only; ultralytics loads its ``.pt`` files itself (full
pickles), so only weights files from a trusted source belong there.
Both map an RGB uint8 image (H, W, 3) to person boxes (N, 4) ``x0, y0, x1, y1`` in pixels.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from osdhuman.curation.config import DetectorConfig
from osdhuman.curation.stages import box_iou

# ultralytics (the optional, AGPL osdhuman[yolo] extra) is imported inside the YOLO detector only.


class DetectorUnavailable(RuntimeError):
    """The configured detector cannot run here (missing package or weights)."""


def merge_boxes(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS by score; returns the kept boxes (K, 4)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    kept: list[int] = []
    ious = box_iou(boxes, boxes)
    for i in order:
        if all(ious[i, j] <= iou for j in kept):
            kept.append(int(i))
    return boxes[sorted(kept)]


class OpenCVPersonDetector:
    def __init__(self, cfg: DetectorConfig):
        self.cfg = cfg
        self.hog = None
        if cfg.hog:
            self.hog = cv2.HOGDescriptor()
            self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        root = Path(cv2.data.haarcascades)
        self.upper = cv2.CascadeClassifier(str(root / "haarcascade_upperbody.xml")) if cfg.upperbody else None
        self.face = cv2.CascadeClassifier(str(root / "haarcascade_frontalface_default.xml")) if cfg.faces else None

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        scale = min(1.0, self.cfg.max_side / max(h, w))
        g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            g = cv2.resize(g, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        gh, gw = g.shape
        boxes, scores = [], []
        if self.hog is not None and min(gh, gw) >= 128:
            rects, weights = self.hog.detectMultiScale(g, winStride=(8, 8), padding=(8, 8), scale=1.05)
            for (x, y, bw, bh), s in zip(rects, np.ravel(weights)):
                if s >= self.cfg.hog_min_score:
                    boxes.append([x, y, x + bw, y + bh])
                    scores.append(float(s) + 1.0)
        if self.upper is not None:
            for x, y, bw, bh in self.upper.detectMultiScale(g, 1.1, 3, minSize=(60, 60)):
                boxes.append([x, y, x + bw, y + bh])
                scores.append(1.0)
        if self.face is not None:
            left, up, right, down = self.cfg.face_to_body
            for x, y, f, _ in self.face.detectMultiScale(g, 1.1, 6, minSize=(40, 40)):
                boxes.append([x - left * f, y - up * f, x + f + right * f, y + f + down * f])
                scores.append(0.5)
        if not boxes:
            return np.zeros((0, 4))
        b = np.asarray(boxes, dtype=np.float64) / scale
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, w)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, h)
        return merge_boxes(b, np.asarray(scores), self.cfg.merge_iou)


class YOLOPersonDetector:
    def __init__(self, cfg: DetectorConfig):
        if not cfg.weights:
            raise DetectorUnavailable("detector 'yolo' needs --detector-weights FILE (e.g. yolo11x.pt)")
        if not Path(cfg.weights).is_file():
            raise DetectorUnavailable(f"{cfg.weights}: YOLO weights file not found")
        try:
            YOLO = _yolo_class()  # optional, AGPL
        except ImportError:
            raise DetectorUnavailable("detector 'yolo' needs ultralytics: pip install 'osdhuman[yolo]'") from None
        self.cfg = cfg
        self.model = load_yolo(YOLO, cfg.weights)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        res = self.model.predict(np.ascontiguousarray(rgb[..., ::-1]), classes=[0], conf=self.cfg.yolo_conf,
                                 device=self.cfg.device, verbose=False)[0]
        return res.boxes.xyxy.cpu().numpy().astype(np.float64).reshape(-1, 4)


def _yolo_class():
    """ultralytics' YOLO, with PIL's ``Image.open`` given back: importing ultralytics replaces it by
    one that, on the first file Pillow cannot identify, tries to pip-install pi-heif and logs
    errors; osdhuman decodes its own inputs (osdhuman.imageio) and hands YOLO arrays."""
    from ultralytics import YOLO
    from ultralytics.utils import patches

    Image.open = getattr(patches, "_image_open", Image.open)
    return YOLO


def load_yolo(yolo_cls, weights: str):
    """``yolo_cls(weights)``, or DetectorUnavailable naming the file and what is wrong with it."""
    if Path(weights).suffix.lower() in (".yaml", ".yml"):  # ultralytics would build an UNTRAINED model from it
        raise DetectorUnavailable(f"{weights}: a model description (YAML), not trained weights; give a YOLO "
                                  "weights file (e.g. yolo11x.pt)")
    try:
        return yolo_cls(weights)
    except Exception as exc:  # noqa: BLE001 - whatever ultralytics raises for a file it cannot use
        while exc.__cause__ is not None or exc.__context__ is not None:  # the first error says what is wrong
            exc = exc.__cause__ or exc.__context__
        detail = " ".join(str(exc).split())[:160]
        raise DetectorUnavailable(f"{weights}: not a YOLO weights file ultralytics can load "
                                  f"({type(exc).__name__}{': ' + detail if detail else ''})") from None


def make_detector(cfg: DetectorConfig):
    if cfg.kind == "yolo":
        return YOLOPersonDetector(cfg)
    return OpenCVPersonDetector(cfg)


def check_detector(cfg: DetectorConfig) -> None:
    """Raise DetectorUnavailable now (before any work) if the detector cannot be built later."""
    if cfg.kind != "yolo":
        return

    if not cfg.weights:
        raise DetectorUnavailable("detector 'yolo' needs --detector-weights FILE (e.g. yolo11x.pt)")
    if not Path(cfg.weights).is_file():
        raise DetectorUnavailable(f"{cfg.weights}: YOLO weights file not found")
    if importlib.util.find_spec("ultralytics") is None:
        raise DetectorUnavailable("detector 'yolo' needs ultralytics: pip install 'osdhuman[yolo]'")
    load_yolo(_yolo_class(), cfg.weights)  # a file it cannot load is named now, not mid-run
