"""Optional model-based metrics: skipped with a message without local weights, computed with them."""
import numpy as np
import pytest
import torch

from pnp_kernels.eval import extras


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A randomly initialised CLIP model with a word-level tokenizer, saved like a downloaded one."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, PreTrainedTokenizerFast

    words = ["<pad>", "<s>", "</s>", "<unk>", "a", "ball", "cat", "bounces"]
    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>")
    config = CLIPConfig(
        text_config=dict(vocab_size=len(words), hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0),
        vision_config=dict(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=8,
    )
    folder = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_skipped_with_a_message_without_local_weights(monkeypatch, tmp_path):
    monkeypatch.delenv(extras.CLIP_ENV, raising=False)
    found, skipped = extras.load_optional(["clip"], uses_prompts=True)
    assert found == [] and extras.CLIP_ENV in skipped[0] and "nothing is downloaded" in skipped[0]
    monkeypatch.setenv(extras.CLIP_ENV, str(tmp_path))  # a folder without a model
    assert extras.load_optional(["clip"], uses_prompts=True)[0] == []
    found, skipped = extras.load_optional(["clip"], uses_prompts=False)
    assert found == [] and "takes no prompt" in skipped[0]


def test_clip_score_is_the_mean_frame_prompt_cosine(monkeypatch, tiny_clip):
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    monkeypatch.setenv(extras.CLIP_ENV, str(tiny_clip))
    (group,), skipped = extras.load_optional(["clip", "clip"], uses_prompts=True)
    assert skipped == [] and [(m.name, m.direction) for m in group.metrics] == [("clip_score", "higher")]
    clip = np.random.default_rng().integers(0, 256, (11, 36, 44, 3), dtype=np.uint8)
    score = group.compute(clip, "a ball bounces")["clip_score"]

    # Reference: CLIP's own forward pass, whose image-text logits are the cosines times exp(logit_scale).
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    frames = clip[np.unique(np.linspace(0, 10, extras.CLIP_FRAMES).round().astype(int))]
    inputs = AutoTokenizer.from_pretrained(tiny_clip)(["a ball bounces"], return_tensors="pt")
    pixels = AutoImageProcessor.from_pretrained(tiny_clip)(images=list(frames), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = model(input_ids=inputs["input_ids"], pixel_values=pixels).logits_per_image
        expected = float(logits.mean() / model.logit_scale.exp())
    assert score == pytest.approx(expected, abs=1e-5)
    assert -1.0 <= score <= 1.0
