"""Person-aware restoration: crop geometry, exact feathered blending, and the tiny model."""

import numpy as np
import pytest

from osdhuman.pipelines.blend import blend_weights, feather_mask
from osdhuman.pipelines.people import PeopleConfig, crop_inputs, paste_people, plan_people, restore_people

# four people on a 1080p-like photo (scaled down): two overlapping, one on the left border
BOXES = np.array([[40, 60, 140, 300], [110, 80, 220, 310], [0, 120, 60, 260], [300, 40, 380, 200]], float)
W, H = 400, 320


def identity(arrays):  # test double: a restorer that changes nothing
    return [a.copy() for a in arrays]


@pytest.fixture(scope="module")
def photo():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def test_plan_is_the_hqacf_square_nearest_on_top():
    cfg = PeopleConfig(min_person_side=100)
    plan = plan_people(np.vstack([BOXES, [[10, 10, 40, 50]]]), W, H, cfg)
    assert plan.small == [(10.0, 10.0, 40.0, 50.0)]  # long edge 40 < 100: left to the background
    for p in plan.people:
        x0, y0, s = p.crop
        bw, bh = p.box[2] - p.box[0], p.box[3] - p.box[1]
        assert s == round(max(bw, bh)) and 0 <= x0 and x0 + s <= W and 0 <= y0 and y0 + s <= H
    # paste order: farthest from the centre first, the nearest (rank 0) last = on top
    d = [np.hypot((p.box[0] + p.box[2]) / 2 - W / 2, (p.box[1] + p.box[3]) / 2 - H / 2) for p in plan.people]
    assert d == sorted(d, reverse=True) and plan.people[-1].rank == 0


def test_context_margin_scales_or_adds_pixels():
    box = np.array([[100, 100, 150, 200]], float)  # long edge 100
    assert plan_people(box, W, H, PeopleConfig(context_margin=1.5)).people[0].crop[2] == 150
    assert plan_people(box, W, H, PeopleConfig(context_margin=20, context_margin_style="pixels")).people[0].crop[2] == 140
    big = plan_people(box, W, H, PeopleConfig(context_margin=9)).people[0].crop  # larger than the photo: fitted
    assert big[2] == H and big[1] == 0


@pytest.mark.parametrize("people_only", [False, True])
def test_identity_restorer_gives_the_input_bit_for_bit(photo, people_only):
    cfg = PeopleConfig(context_margin=1.2, people_only=people_only, min_person_side=32)
    (res,) = restore_people([photo], [BOXES], identity, cfg, batch_size=3)
    assert len(res.plan.people) == 4
    assert res.image.dtype == np.uint8 and np.array_equal(res.image, photo)


def test_blend_weights_sum_to_one_and_have_no_hard_edges():
    plan = plan_people(BOXES, W, H, PeopleConfig(context_margin=1.2, min_person_side=32))
    crops = [p.crop for p in plan.people]
    masks = [feather_mask(c, W, H, 0.125) for c in crops]
    w = blend_weights((H, W), crops, masks)  # (1 + N, H, W)
    assert w.shape == (5, H, W)
    assert (w >= -1e-7).all() and np.abs(w.sum(0) - 1).max() < 1e-6
    # the top layer (nearest person) keeps its mask; the background is 0 deep inside a person
    assert np.allclose(w[-1][crops[-1][1]:crops[-1][1] + crops[-1][2], crops[-1][0]:crops[-1][0] + crops[-1][2]], masks[-1])
    x0, y0, s = crops[-1]
    assert w[0, y0 + s // 2, x0 + s // 2] == 0
    # no hard edges: neighbouring pixels' weights differ little (feathered over s/8 px)
    assert np.abs(np.diff(w, axis=1)).max() < 0.2 and np.abs(np.diff(w, axis=2)).max() < 0.2
    # an edge on the photo border is not feathered: the border person has full weight there
    left = next(c for c in crops if c[0] == 0)
    assert feather_mask(left, W, H, 0.125)[left[2] // 2, 0] == 1.0


def test_change_is_pasted_only_where_people_are(photo):
    cfg = PeopleConfig(people_only=True, min_person_side=32)
    brighter = lambda arrays: [np.clip(a.astype(int) + 40, 0, 255).astype(np.uint8) for a in arrays]
    plan = plan_people(BOXES, W, H, cfg)
    ins = crop_inputs(photo, plan, cfg.crop_size)
    out = paste_people(photo, None, plan, ins, brighter(ins), cfg)
    covered = np.zeros((H, W), bool)
    for x0, y0, s in (p.crop for p in plan.people):
        covered[y0:y0 + s, x0:x0 + s] = True
    assert np.array_equal(out[~covered], photo[~covered])
    x0, y0, s = plan.people[-1].crop
    centre = out[y0 + s // 4:y0 + 3 * s // 4, x0 + s // 4:x0 + 3 * s // 4].astype(int)
    before = photo[y0 + s // 4:y0 + 3 * s // 4, x0 + s // 4:x0 + 3 * s // 4].astype(int)
    assert (centre - before).mean() > 25  # the restored (brighter) person is really pasted


def test_background_is_used_outside_people(photo):
    cfg = PeopleConfig(min_person_side=32)
    calls = []

    def restorer(arrays):
        calls.append([a.shape for a in arrays])
        return [np.full_like(a, 7) for a in arrays]

    (res,) = restore_people([photo], [BOXES[:1]], restorer, cfg)
    assert calls == [[(512, 512, 3)], [(H, W, 3)]]  # one person crop at 512, then the whole photo
    assert (res.image[:, -10:] == 7).all()


def test_tiny_model_restores_people(tiny_pipe, astronaut):
    photo = astronaut[:96, :120]
    run = lambda arrays: list(tiny_pipe(arrays, batch_size=len(arrays), output_type="np", tile_size=64, tile_overlap=16).images)
    cfg = PeopleConfig(crop_size=64, min_person_side=32)
    (res,) = restore_people([photo], [np.array([[20, 10, 80, 90]])], run, cfg, keep_crops=True)
    assert res.image.shape == photo.shape and res.crops_after[0].shape == (64, 64, 3)
    assert not np.array_equal(res.image, photo)
    assert set(res.seconds) == {"crops", "people", "background", "blend"}


def test_work_units_count_the_unet_passes(tiny_pipe):
    from osdhuman.pipelines.progress import WorkProgress, image_units

    units = image_units(100, 120, 64, 16)
    bar = WorkProgress(units, enabled=False)
    bar.watch(tiny_pipe.model.unet)
    try:
        tiny_pipe([np.zeros((100, 120, 3), np.uint8)], output_type="np", tile_size=64, tile_overlap=16)
    finally:
        bar.close()
    assert units == 6 and bar.done == units
    assert tiny_pipe.model.unet._forward_hooks == {}  # the hook is removed again


def test_progress_is_silent_off_a_terminal(capsys):
    from osdhuman.pipelines.progress import WorkProgress

    bar = WorkProgress(10, enabled=True)  # pytest's captured stderr is not a TTY
    bar.add(5)
    bar.advance(20)  # capped at the total
    bar.close()
    assert bar.total == 15 and bar.done == 15
    assert capsys.readouterr().err == ""


def test_box_file_errors_name_the_file(tmp_path):
    from osdhuman.pipelines.box_file import BoxFileError, load_box_file

    with pytest.raises(BoxFileError, match="not found"):
        load_box_file(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BoxFileError, match="bad.json: not a readable JSON"):
        load_box_file(bad)
    bad.write_text('{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 2, "bbox": [0, 0, 1, 1]}]}')
    with pytest.raises(BoxFileError, match="image_id 2"):
        load_box_file(bad)
    bad.write_text('{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 1, "bbox": [0, 0]}]}')
    with pytest.raises(BoxFileError, match="malformed"):
        load_box_file(bad)
    ok = tmp_path / "ok.json"
    ok.write_text('{"images": [{"id": 1, "file_name": "a.png"}], "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "bus"}],'
                  ' "annotations": [{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]}, {"image_id": 1, "category_id": 2, "bbox": [0, 0, 9, 9]}]}')
    assert load_box_file(ok)["a.png"].tolist() == [[1, 2, 4, 6]]


def test_prepare_scales_boxes_with_the_upscale_and_rejects_too_large(photo):
    from pathlib import Path

    from osdhuman.pipelines.people_paths import InputRejected, prepare_image

    src = Path("p.png")
    item = prepare_image(src, photo, 2.0, 1000, True, boxes={src: BOXES})
    assert item.image.shape == (2 * H, 2 * W, 3) and np.allclose(item.boxes, BOXES * 2)
    with pytest.raises(InputRejected, match="above --max-side 700"):
        prepare_image(src, photo, 2.0, 700, True, boxes={src: BOXES})
    with pytest.raises(InputRejected, match="box_outside_image"):
        prepare_image(src, photo, 1.0, None, True, boxes={src: np.array([[0, 0, W + 50, 10]])})
    found = prepare_image(src, photo, 1.5, None, True, detector=lambda rgb: BOXES[:2])
    assert found.boxes_from == "detector" and np.allclose(found.boxes, BOXES[:2] * 1.5)
    with pytest.raises(InputRejected, match="detect_failed: RuntimeError: boom"):
        prepare_image(src, photo, 1.0, None, True, detector=lambda rgb: (_ for _ in ()).throw(RuntimeError("boom")))


def test_a_left_over_progress_hook_takes_itself_off():
    import torch

    from osdhuman.pipelines.progress import WorkProgress

    lin = torch.nn.Linear(2, 2)
    bar = WorkProgress(4, enabled=False)
    bar.watch(lin)
    lin(torch.zeros(3, 2))
    assert bar.done == 3
    bar._closed = True  # as if the run had raised before close()
    lin(torch.zeros(1, 2))
    assert bar.done == 3 and lin._forward_hooks == {}
