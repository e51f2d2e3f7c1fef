"""enable_pnp on diffusers' LTX2Pipeline: video and audio latents, packed (B, N, C), one joint model call."""
import pytest
import torch
from diffusers import LTX2Pipeline

from pnp_kernels import PnPConfig, RefinePlan
from pnp_kernels.diffusers import disable_pnp, enable_pnp
from tests.diffusers import tiny_models
from tests.diffusers.model_calls import CallRecorder, ForwardCounter

STEPS, PLAN = 3, "0-1:2"
SIZE = dict(height=32, width=32, num_frames=5, frame_rate=25.0)  # video tokens 3 x 16 x 16, audio 5 tokens
# Plain guidance: CFG only (no STG, no modality isolation, no rescale), so a naive loop can combine it.
CFG_ONLY = dict(stg_scale=0.0, audio_stg_scale=0.0, modality_scale=1.0, audio_modality_scale=1.0,
                guidance_rescale=0.0, audio_guidance_rescale=0.0)


def make():
    pipe = LTX2Pipeline(**tiny_models.ltx2_components())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, batch=1, seed=0, **kwargs):
    embeds, mask = tiny_models.ltx2_text(batch, 3)
    negative, negative_mask = tiny_models.ltx2_text(batch, 9)
    args = dict(prompt_embeds=embeds, prompt_attention_mask=mask, negative_prompt_embeds=negative,
                negative_prompt_attention_mask=negative_mask, num_inference_steps=STEPS, guidance_scale=3.0,
                generator=torch.Generator().manual_seed(seed), output_type="latent", **SIZE)
    args.update(kwargs)
    out = pipe(**args)
    return out.frames, out.audio


def test_empty_plan_equals_stock_with_every_guidance_term():
    pipe = make()
    stock = run(pipe, seed=1)
    enable_pnp(pipe, PnPConfig(plan="none"))
    ours = run(pipe, seed=1)
    for a, b in zip(ours, stock):
        assert (a - b).abs().max().item() <= 1e-6
    assert pipe.pnp_stats.nfe == STEPS and [s.nfe for s in pipe.pnp_stats_copies] == [STEPS]
    disable_pnp(pipe)
    assert all(torch.equal(a, b) for a, b in zip(run(pipe, seed=1), stock))


def naive_joint(model, latents, sigmas, plan, tau, certain_stop, generator):
    """P&P for latents that share one model call, one modality after the other, one sample at a time.
    latents: [video, audio] packed (B, N, C); model(inputs, step) -> velocities. A step goes on while
    any modality has a sample still iterating; a finished sample or modality is fed its last input."""
    sigmas = [float(s) for s in sigmas]
    state = [z.clone().float() for z in latents]
    batch = state[0].shape[0]
    for step in range(len(sigmas) - 1):
        s, s_next, planned = sigmas[step], sigmas[step + 1], plan.iterations(step)
        inputs = [z.clone() for z in state]
        prev = [[None] * batch for _ in state]  # per modality and sample: (certain, x0, z_next)
        done = [[False] * batch for _ in state]
        going = [True] * len(state)  # modality still iterating
        for k in range(planned + 1):
            velocities = model(inputs, step)
            for m, (z_in, vel) in enumerate(zip(inputs, velocities)):
                if not going[m]:
                    continue
                for b in range(batch):
                    if done[m][b]:
                        continue
                    x0, z_next = z_in[b] - s * vel[b], z_in[b] + (s_next - s) * vel[b]
                    certain = None
                    if prev[m][b] is not None:
                        _, prev_x0, prev_next = prev[m][b]
                        uncertainty = (x0 - prev_x0).abs().sum(dim=-1) / x0.shape[-1]  # over channels (last axis)
                        certain = uncertainty < tau
                        if prev[m][b][0] is not None:
                            certain = certain | prev[m][b][0]
                        x0 = torch.where(certain[:, None], prev_x0, x0)
                        z_next = torch.where(certain[:, None], prev_next, z_next)
                        done[m][b] = certain.float().mean().item() > certain_stop
                    prev[m][b] = (certain, x0, z_next)
                going[m] = k < planned and not all(done[m])
            if not any(going):
                break
            for m, z_in in enumerate(inputs):  # video draws first, then audio; only while iterating
                if going[m]:
                    shape = z_in.shape
                    eps = torch.randn(shape[0], shape[2], shape[1], generator=generator).transpose(1, 2)
                    for b in range(batch):
                        if not done[m][b]:
                            z_in[b] = (1 - s) * prev[m][b][1] + s * eps[b]
        state = [torch.stack([p[2] for p in per_sample]) for per_sample in prev]
    return state


class JointModel:
    """The pipeline's transformer as the naive loop calls it: the kwargs of the pipeline's first call with
    the latents and timestep replaced; CFG (if the pipeline batched it) combined in velocity space."""

    def __init__(self, pipe, kwargs, timesteps, scale=None, audio_scale=None):
        self.pipe, self.kwargs, self.timesteps = pipe, kwargs, timesteps
        self.scale, self.audio_scale = scale, audio_scale
        self.calls = 0

    def __call__(self, inputs, step):
        self.calls += 1
        video, audio = inputs
        copies = 1 if self.scale is None else 2
        t = self.timesteps[step].expand(copies * video.shape[0])
        out_video, out_audio = self.pipe.transformer(**{
            **self.kwargs, "hidden_states": torch.cat([video] * copies), "audio_hidden_states": torch.cat([audio] * copies),
            "timestep": t, "sigma": t,
        })
        out_video, out_audio = out_video.float(), out_audio.float()
        if self.scale is None:
            return out_video, out_audio
        (uncond_v, cond_v), (uncond_a, cond_a) = out_video.chunk(2), out_audio.chunk(2)
        return cond_v + (self.scale - 1) * (cond_v - uncond_v), cond_a + (self.audio_scale - 1) * (cond_a - uncond_a)


def initial_latents(pipe, batch, seed):
    """The packed video and audio noise the pipeline draws first, and the generator after those draws."""
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(batch, 4, 3, 16, 16, generator=g)
    audio = torch.randn(batch, 2, 5, 2, generator=g)
    return [pipe._pack_latents(video), pipe._pack_audio_latents(audio)], g


def unpack(pipe, video, audio):
    """The pipeline's latent output from the packed state."""
    video = pipe._unpack_latents(video, 3, 16, 16)
    video = pipe._denormalize_latents(video, pipe.vae.latents_mean, pipe.vae.latents_std, pipe.vae.config.scaling_factor)
    audio = pipe._denormalize_audio_latents(audio, pipe.audio_vae.latents_mean, pipe.audio_vae.latents_std)
    return video, pipe._unpack_audio_latents(audio, 5, num_mel_bins=2)


@pytest.mark.parametrize("batch, guided, certain_stop", [(1, False, 0.5), (2, True, 0.35)])
def test_plan_equals_naive_joint_loop(batch, guided, certain_stop):
    pipe = make()
    config = PnPConfig(plan=PLAN, tau=0.8, certain_stop=certain_stop)
    enable_pnp(pipe, config)
    recorder = CallRecorder(pipe.transformer)
    counter = ForwardCounter(pipe.transformer.proj_in)
    scales = dict(guidance_scale=3.0, audio_guidance_scale=2.0) if guided else dict(guidance_scale=1.0, audio_guidance_scale=1.0)
    video, audio = run(pipe, batch=batch, seed=2, **CFG_ONLY, **scales)
    recorder.remove()
    model_calls = counter.calls
    grid = pipe.scheduler.scheduler
    model = JointModel(pipe, recorder.kwargs[0], grid.timesteps, *((3.0, 2.0) if guided else ()))
    latents, g = initial_latents(pipe, batch, 2)
    expected = unpack(pipe, *naive_joint(model, latents, grid.sigmas, RefinePlan.parse(PLAN), 0.8, certain_stop, g))
    counter.remove()
    for name, ours, ref in zip(("video", "audio"), (video, audio), expected):
        diff = (ours - ref).abs().max().item()
        assert diff <= 1e-5, (name, diff)
    assert model_calls == model.calls  # the idle entries ran no model
    assert max(pipe.pnp_stats.nfe, pipe.pnp_stats_copies[0].nfe) == model.calls
    assert model.calls < STEPS + RefinePlan.parse(PLAN).extra_nfe(STEPS), "the case must exit early"


def test_only_the_audio_is_uncertain():
    pipe = make()
    with torch.no_grad():  # audio velocities 20x larger: audio disagrees between iterations, video agrees
        pipe.transformer.audio_proj_out.weight.mul_(20.0)
        pipe.transformer.audio_proj_out.bias.mul_(20.0)
    config = PnPConfig(plan=PLAN, tau=2.0, certain_stop=0.9)
    enable_pnp(pipe, config)
    recorder = CallRecorder(pipe.transformer)
    video, audio = run(pipe, seed=4, **CFG_ONLY, guidance_scale=1.0, audio_guidance_scale=1.0)
    recorder.remove()
    video_stats, audio_stats = pipe.pnp_stats, pipe.pnp_stats_copies[0]
    for v_step, a_step in zip(video_stats.steps, audio_stats.steps):
        if v_step.planned:
            assert v_step.exit_iteration == [1] and v_step.certain_fractions[0][0] > 0.9  # video leaves
            assert a_step.exit_iteration == [None] and a_step.iterations_run == 2  # audio goes on
            assert a_step.certain_fractions[0][0] < 0.9
    grid = pipe.scheduler.scheduler
    latents, g = initial_latents(pipe, 1, 4)
    model = JointModel(pipe, recorder.kwargs[0], grid.timesteps)
    expected = unpack(pipe, *naive_joint(model, latents, grid.sigmas, RefinePlan.parse(PLAN), 2.0, 0.9, g))
    for ours, ref in zip((video, audio), expected):
        assert (ours - ref).abs().max().item() <= 1e-5


def test_image_to_video_is_refused_with_the_reason():
    from diffusers import LTX2ImageToVideoPipeline

    pipe = LTX2ImageToVideoPipeline(**tiny_models.ltx2_components())
    with pytest.raises(ValueError, match="LTX2ImageToVideoPipeline is not supported: a per-token conditioning mask"):
        enable_pnp(pipe, PnPConfig())
