"""Pure logic of speechlm_batch.frontend: pool size, features device, window order, prepared rows."""

from __future__ import annotations

from dataclasses import dataclass

from speechlm_batch import frontend, pipeline
from speechlm_batch.frontend import PreparedPiece, PreparedRow, RenderedRequest
from speechlm_batch.settings import GPU_FRONTEND_WORKERS_MAX, GPU_HOST_THREADS, RunSettings
from speechlm_batch.types import BadRow, ErrorKind, RowError, Utterance


def test_worker_count_follows_the_setting_then_the_machine():
    assert frontend.worker_count(RunSettings(frontend_workers=3), cpu=True) == 3
    assert frontend.worker_count(RunSettings(frontend_workers=0), cpu=False) == 0
    assert frontend.worker_count(RunSettings(), cpu=True) == 0  # CPU: the in-process path
    assert frontend.worker_count(RunSettings(), cpu=False, cores=64) == GPU_FRONTEND_WORKERS_MAX
    assert frontend.worker_count(RunSettings(), cpu=False, cores=GPU_HOST_THREADS + 2) == 2
    assert frontend.worker_count(RunSettings(), cpu=False, cores=2) == 1  # a GPU always gets one


@dataclass(frozen=True)
class _Featured:
    feature_device: str | None = "cuda"


def test_features_device_overrides_adapters_that_have_one():
    assert frontend.with_features_device(_Featured(), "cpu").feature_device is None
    assert frontend.with_features_device(_Featured(None), "cuda").feature_device == "cuda"
    assert frontend.with_features_device(_Featured(), None).feature_device == "cuda"
    plain = object()
    assert frontend.with_features_device(plain, "cpu") is plain


def _utt(i: int) -> Utterance:
    return Utterance(f"u{i}", i, f"/a/{i}.wav", {"id": f"u{i}"})


class _FakePool:
    """Prepares each row at once; records what was handed over when."""

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self._rows: dict[int, Utterance] = {}

    def submit(self, item: Utterance) -> int:
        self.submitted.append(item.id)
        self._rows[len(self._rows)] = item
        return len(self._rows) - 1

    def collect(self, ids):
        return {t: PreparedRow(None, 1.0, 1, (), (PreparedPiece(0, 10 + t, RenderedRequest({}, 5)),)) for t in ids}


def test_prepared_windows_keep_order_and_hand_over_ahead():
    pool = _FakePool()
    bad = BadRow("b", 2, "{", RowError(ErrorKind.BAD_ROW, "not json"))
    windows = iter([[_utt(0), _utt(1)], [bad, _utt(3)], [_utt(4)], [_utt(5)]])
    out = frontend.prepared_windows(windows, pool, ahead=1)
    first = next(out)
    assert [item.id for item, _ in first] == ["u0", "u1"]
    assert pool.submitted == ["u0", "u1", "u3", "u4"]  # window 2 ahead, then window 3 once window 1 is out
    second = next(out)
    assert second[0] == (bad, bad.error)  # bad rows never go to a worker
    assert [w for w in out] and pool.submitted[-1] == "u5"


def test_assembler_opens_prepared_rows_like_decoded_ones():
    class Adapter:
        max_piece_s = 30.0

        def postprocess(self, text):
            return text.strip()

    asm = pipeline._Assembler(Adapter(), collapse=False)
    ok = PreparedRow(None, 40.0, 3, (1,), (PreparedPiece(0, 5, RenderedRequest({}, 5)), PreparedPiece(2, 5, RenderedRequest({}, 5))))
    pieces = asm.open_prepared(_utt(0), ok)
    assert [p.index for p in pieces] == [0, 2]
    lost = PreparedRow(RowError(ErrorKind.FRONTEND, "/a/1.wav: front-end worker died"))
    assert asm.open_prepared(_utt(1), lost) == []
    refused = PreparedRow(None, 2.0, 1, (), (PreparedPiece(0, 5, None, "ValueError: bad"),))
    assert asm.open_prepared(_utt(2), refused) == []
    assert [(r.utterance.id, r.error.kind) for r in asm.finished] == [("u1", ErrorKind.FRONTEND), ("u2", ErrorKind.ENGINE)]
    from speechlm_batch.engine import Completion

    asm.complete(Completion(("u0", 0), " a ", 1))
    asm.complete(Completion(("u0", 2), "b", 1))
    assert asm.finished[-1].pred_text == "a b" and asm.finished[-1].audio_s == 40.0


def test_prepared_rows_cross_the_queue_with_their_tensors_unchanged():
    import torch

    features = torch.arange(80 * 30, dtype=torch.float32).reshape(80, 30) / 7
    tensors = {
        "fp32": features,
        "fp16": features.half(),
        "bf16": features.bfloat16(),  # numpy has no bfloat16: travels as its bits
        "strided": features.t(),  # not contiguous
        "ids": torch.tensor([50258, 50259, 50359, 50363]),
    }
    engine_input = {"encoder": {"mm_kwargs": tensors}, "decoder_prompt": {"prompt_token_ids": [1, 2]}}
    piece = frontend.PreparedPiece(0, 16000, frontend.RenderedRequest(engine_input, 200))
    row = frontend.PreparedRow(None, 1.0, 1, (), (piece,))

    back = frontend.loads(frontend.dumps(row))

    got = back.pieces[0].request.engine_input["encoder"]["mm_kwargs"]
    assert set(got) == set(tensors)
    for name, tensor in tensors.items():
        assert type(got[name]) is torch.Tensor and got[name].dtype == tensor.dtype, name
        assert torch.equal(got[name], tensor), name
    assert back.pieces[0].request.engine_input["decoder_prompt"] == {"prompt_token_ids": [1, 2]}
    got["fp32"] += 1  # rebuilt tensors are writable (the engine's processor may work in place)
