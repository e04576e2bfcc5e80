"""The seed papers: each claim, the paper's number, our small-scale experiment and the
full-scale recipe. ``experiments/reproduce.py`` runs the experiments and renders
``REPRODUCTION.md`` from this table and the saved results; nothing in that file is typed by
hand.

An entry's ``small`` is one of:

* ``("fn", module_function)``: a small experiment of :mod:`reproduction.analytic` run here;
* ``("results", path, reader)``: the saved output of an existing experiment script
  (``command`` re-creates it); ``reader(json) -> result dict``;
* ``None``: not testable here; ``why_not`` says why.
"""

from __future__ import annotations

from pathlib import Path

from reproduction import analytic

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "experiments" / "results"


def _few_step(method_prefix: str, claim_steps=(1, 2)):
    """Reader of ``few_step_toy_cpu.json``: the method's few-step SW1 against the many-step
    baseline (the script's own bar: SW1 <= 2x the best many-step sampler)."""

    def read(d):
        rows = [r for r in d["rows"] if r["method"] == method_prefix and r["nfe"] in claim_steps]
        # the unconditional many-step baselines (the file also holds conditional rows)
        base = min(r["sw1"] for r in d["rows"] if r["nfe"] >= 50 and r["method"] in ("EDM", "FM"))
        out = [{"method": r["method"], "sampler": r["sampler"], "NFE": r["nfe"],
                "SW1": round(r["sw1"], 4), "x many-step": round(r["sw1"] / base, 1)}
               for r in rows]
        best = min((r["SW1"] for r in out), default=float("nan"))
        ok = best <= 2 * base
        return {"rows": out,
                "measured": f"best SW1 at <= {max(claim_steps)} NFE {best:.4f} vs "
                            f"{base:.4f} for the best many-step sampler ({best / base:.1f}x)",
                "verdict": "agrees" if ok else "partly",
                "why": ("few-step samples within 2x the many-step SW1 at 1/50 of the NFE" if ok
                        else "far better than one Euler step of a diffusion model, but not "
                             "within 2x of the many-step baseline at this training length")}
    return read


def _guidance(section: str, scale_key: str):
    """Reader of ``guidance_toy_cpu.json``: class accuracy of guided samples against the
    guidance scale (the paper's fidelity axis)."""

    def read(d):
        rows = [dict(r) for r in d.get(section) or []]
        acc = [r["accuracy"] for r in sorted(rows, key=lambda r: r[scale_key])]
        ok = len(acc) > 1 and all(b >= a for a, b in zip(acc, acc[1:], strict=False))
        return {"rows": rows,
                "measured": "class accuracy by scale: " + ", ".join(
                    f"{r[scale_key]:g}: {r['accuracy']:.3f}" for r in rows),
                "verdict": "agrees" if ok else "disagrees",
                "why": "accuracy rises monotonically with the guidance scale (8x8 digits; "
                       "FID is not measured here)" if ok else "accuracy is not monotone"}
    return read


def _sohl(d):
    r = d["rows"][0]
    rows = [{"run": x["run"], "K (bits)": round(x["K_bits"], 3),
             "K - L_null": round(x["K_minus_Lnull"], 3),
             "SW1": round(x["sw1"], 3) if x.get("sw1") is not None else ""} for x in d["rows"]]
    return {"rows": rows,
            "measured": f"K = {r['K_bits']:.3f} bits, K - L_null = {r['K_minus_Lnull']:.3f} "
                        f"bits (paper: K {d['paper']['K_bits']}, K - L_null "
                        f"{d['paper']['K_minus_Lnull_bits']}); SW1 {r['sw1']:.3f} "
                        f"(floor {d['sw1_floor']:.3f})",
            "verdict": "partly",
            "why": "training by the bound K works (K rises above the null model's and samples "
                   "reach the roll) but the paper's K is not reached: the fixed first beta "
                   "may cap it (not verified)"}


def _cold(d):
    res = d["restoration"]
    beats_input = all(r["alg2"] < r["degraded"] for r in res)
    last = res[-1]
    gen = {(g["symmetry_noise"], g["algorithm"]): g for g in d["generation"]}
    g0, g1 = gen[(0.0, "improved")], gen[(0.002, "improved")]
    ok = beats_input and last["alg2"] <= last["alg1"]
    return {"rows": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}
                     for r in res],
            "measured": f"restoration RMSE at s = T: degraded {last['degraded']:.3f}, "
                        f"Algorithm 1 {last['alg1']:.3f}, Algorithm 2 {last['alg2']:.3f}; "
                        f"generation FD (digit features) without / with symmetry noise "
                        f"{g0['fid']:.0f} / {g1['fid']:.0f}",
            "verdict": "agrees" if ok else "disagrees",
            "why": "Algorithm 2 restores better than the degraded input at every s and better "
                   "than Algorithm 1 at s = T; symmetry breaking helps generation (8x8 digits, "
                   "600 steps: generation quality itself is poor)" if ok else
                   "Algorithm 2 did not beat the input or Algorithm 1"}


def _gan(a: str, b: str, claim: str):
    def read(d):
        ra, rb = d["rows"][a], d["rows"][b]
        rows = [{"run": k, "modes (of 25)": f"{v['modes'][0]:.1f} +- {v['modes'][1]:.1f}",
                 "SW1": f"{v['sw1'][0]:.3f} +- {v['sw1'][1]:.3f}"} for k, v in d["rows"].items()]
        more = ra["modes"][0] > rb["modes"][0] and ra["sw1"][0] < rb["sw1"][0]
        return {"rows": rows,
                "measured": f"{a}: {ra['modes'][0]:.1f} modes, SW1 {ra['sw1'][0]:.3f}; {b}: "
                            f"{rb['modes'][0]:.1f} modes, SW1 {rb['sw1'][0]:.3f} "
                            f"({d['seeds']} seeds, {d['steps']} steps)",
                "verdict": "agrees" if more else "not shown",
                "why": (f"{claim}, but every run is badly undertrained (few samples near a "
                        "mode) and the seed spread is large") if more else
                       f"{claim} is not shown at this training length"}
    return read


# Each entry: title, claim, paper (numbers with their table), small, command (for "results"),
# full (config, hardware, wall-clock, target).
PAPERS = {
    "sohl_dickstein": dict(
        title="Sohl-Dickstein et al. 2015, Deep Unsupervised Learning using Nonequilibrium "
              "Thermodynamics",
        claim="A learned reverse diffusion (T = 40) models the 2-D swiss roll; the bound K "
              "is tractable and tight enough to train on.",
        paper="Table 1: swiss roll K = 2.35 bits [from memory, unverified]",
        small=("results", "sohl_dickstein_swissroll_cpu.json", _sohl),
        command="python experiments/sohl_dickstein_swissroll.py",
        full="configs/sohl_dickstein_swissroll.py; 1 CPU core, minutes; K ~ 2.35 bits"),
    "ddpm": dict(
        title="Ho, Jain & Abbeel 2020, Denoising Diffusion Probabilistic Models",
        claim="A UNet trained with the simple eps loss on the linear 1000-step schedule "
              "generates high-quality images.",
        paper="CIFAR-10 FID 3.17 (abstract), IS 9.46",
        small=None,
        why_not="measured by the README's quickstart (digits: classifier score 6.57 vs 7.60 "
                "real and 4.73 for a Gaussian fit); a paper-comparable FID needs CIFAR-10 and "
                "the Inception weights",
        full="configs/ddpm_cifar10.py; 8 V100 ~ 10.6 h for 800k steps (paper); FID 3.17"),
    "iddpm": dict(
        title="Nichol & Dhariwal 2021, Improved DDPM",
        claim="Learning the variance with the hybrid loss and the cosine schedule improves "
              "log-likelihood and keeps sample quality with fewer steps.",
        paper="CIFAR-10: L_vlb 2.94 bits/dim (FID 11.47), L_hybrid FID 3.19",
        small=None,
        why_not="not yet run here: needs a learned-variance model trained to convergence on "
                "a small set (the losses and the VLB are tested against closed forms)",
        full="configs/iddpm_cifar10.py; 8 V100-days class (500k steps); NLL 2.94 / FID 3.19"),
    "ddim": dict(
        title="Song, Meng & Ermon 2021, DDIM",
        claim="The deterministic sampler (eta = 0) gives better samples than DDPM's "
              "stochastic one at few steps.",
        paper="Table 1, CIFAR-10 FID at S = 10/20/50/100: eta 0: 13.36/6.84/4.67/4.16; "
              "eta 1: 41.07/18.36/8.01/5.78 [from memory, unverified]",
        small=("fn", analytic.ddim_eta),
        full="configs/ddpm_cifar10.py with sample.sampler=ddim, sample.num_steps=S; FID as "
             "in the table"),
    "ncsn": dict(
        title="Song & Ermon 2019, NCSN (annealed Langevin dynamics)",
        claim="Langevin dynamics with exact scores misweights separated modes; annealing "
              "over noise levels recovers the weights.",
        paper="Fig. 3 (mixture 1/5, 4/5); CIFAR-10 IS 8.87, FID 25.32",
        small=("fn", analytic.ncsn_annealing),
        full="configs/ncsn_cifar10.py; 1 GPU ~ 1 day; IS 8.87"),
    "score_sde": dict(
        title="Song et al. 2021, Score-Based Generative Modeling through SDEs",
        claim="The probability-flow ODE gives exact likelihoods of a score model.",
        paper="CIFAR-10 NLL 2.99 bits/dim (sub-VP DDPM++ deep), FID 2.20 (VE NCSN++ deep)",
        small=("fn", analytic.score_sde_likelihood),
        full="configs/score_sde_vp_cifar10.py / score_sde_ve_cifar10.py; 8 GPUs, days; "
             "2.99 bits/dim, FID 2.20"),
    "edm": dict(
        title="Karras et al. 2022, Elucidating the Design Space (EDM)",
        claim="Heun's method on the rho = 7 grid needs far fewer network evaluations than "
              "Euler for the same accuracy.",
        paper="CIFAR-10 FID 1.79 (cond) / 1.97 (uncond) at 35 NFE",
        small=("fn", analytic.edm_samplers),
        full="configs/edm_cifar10.py; 8 V100 ~ 2 days; FID 1.97 at 35 NFE"),
    "adm": dict(
        title="Dhariwal & Nichol 2021, Diffusion Models Beat GANs (classifier guidance)",
        claim="Guiding with a noisy classifier's gradient trades diversity for fidelity and "
              "raises class accuracy.",
        paper="ImageNet 128 ADM-G FID 2.97; 256 ADM-G 4.59",
        small=("results", "guidance_toy_cpu.json", _guidance("classifier_guidance", "scale")),
        command="python experiments/guidance_toy_images.py",
        full="ADM ImageNet 256 (a recipe is not shipped yet); hundreds of V100-days; FID 4.59"),
    "cfg": dict(
        title="Ho & Salimans 2022, Classifier-Free Diffusion Guidance",
        claim="Mixing conditional and unconditional predictions (one network, label dropout) "
              "raises fidelity / class accuracy with the scale w, at the cost of diversity.",
        paper="ImageNet 128: FID 2.43 at w = 0.3; best IS at w >= 4 [partly from memory]",
        small=("results", "guidance_toy_cpu.json", _guidance("cfg", "w")),
        command="python experiments/guidance_toy_images.py",
        full="DiT recipes with sample.guidance (configs/dit_xl2_imagenet256.py)"),
    "cold": dict(
        title="Bansal et al. 2022, Cold Diffusion",
        claim="Deterministic degradations (blur, masking, ...) can be inverted by a "
              "restoration network with the improved sampler (Algorithm 2).",
        paper="Restoration/generation tables (CelebA, AFHQ, CIFAR-10) [no number confirmed]",
        small=("results", "cold_diffusion_digits_cpu.json", _cold),
        command="python experiments/cold_diffusion_digits.py",
        full="configs/cold_cifar10_blur.py (T = 50) and the CelebA / AFHQ configs"),
    "video": dict(
        title="Ho et al. 2022, Video Diffusion Models",
        claim="A factorised space-time UNet with reconstruction guidance extends videos "
              "better than the replacement method.",
        paper="UCF101 16x64x64: IS 57.00, FID 295 [from memory, unverified]",
        small=("results", "video_moving_shapes_cpu.json", None),
        command="python experiments/video_moving_shapes.py",
        full="configs/video_ucf101.py; TPU pods; IS 57"),
    "dit": dict(
        title="Peebles & Xie 2023, DiT",
        claim="Transformer diffusion models scale: FID falls as Gflops rise.",
        paper="ImageNet 256 DiT-XL/2-G FID 2.27 (cfg 1.5); DiT-XL/2 118.6 Gflops",
        small=None,
        why_not="FID needs ImageNet latents and ~1,000 TPU-v3 hours; what is checked here is "
                "the presets' size (parameter counts and GMACs equal the paper's table: "
                "experiments/results/model_presets_cpu.md)",
        full="configs/dit_xl2_imagenet256.py; 7M steps on TPU v3-256; FID 2.27"),
    "sit": dict(
        title="Ma et al. 2024, SiT",
        claim="The same backbone trained as an interpolant (linear, velocity) beats DiT; the "
              "SDE sampler beats the ODE at the same NFE.",
        paper="ImageNet 256 SiT-XL/2-G FID 2.06",
        small=None, why_not="needs ImageNet latents and GPU-days",
        full="configs/mg_sit_xl2_imagenet256.py family; 7M steps; FID 2.06"),
    "lightningdit": dict(
        title="Yao et al. 2025, VA-VAE + LightningDiT",
        claim="Aligning a high-dimensional VAE's latents with DINOv2 features keeps them easy "
              "to generate; LightningDiT converges fast on them.",
        paper="ImageNet 256 FID 1.35 (800 epochs), 2.11 at 64 epochs",
        small=None, why_not="needs ImageNet, DINOv2 weights and GPU-weeks",
        full="LightningDiT-XL/1 on f16d32 latents (recipe in progress)"),
    "model_guidance": dict(
        title="Tang et al. 2025, Diffusion Models without Classifier-free Guidance (model "
              "guidance)",
        claim="Training with the guided target gives CFG-like quality with one network "
              "evaluation per step.",
        paper="ImageNet 256 FID 1.34 (SiT-XL/2 + MG)",
        small=None, why_not="not judged yet: experiments/results/few_step_toy_cpu.md has MG "
                            "rows (SW1 0.0287 at 100 NFE against CFG's 0.0224 at 200 NFE), but "
                            "SW1 to the data cannot judge guidance, which sharpens on purpose; "
                            "a class-accuracy experiment on digits is to come",
        full="configs/mg_sit_xl2_imagenet256.py; GPU-weeks; FID 1.34"),
    "consistency": dict(
        title="Song et al. 2023, Consistency Models (CD, CT)",
        claim="One network evaluation gives samples close to the many-step teacher.",
        paper="CIFAR-10 CD 1-step FID 3.55, CT 1-step 8.70",
        small=("results", "few_step_toy_cpu.json", _few_step("CD")),
        command="python experiments/few_step_toy.py",
        full="configs/cd_cifar10.py, configs/ct_cifar10.py; 8 A100 ~ days; FID 3.55 / 8.70"),
    "shortcut": dict(
        title="Frans et al. 2024, Shortcut Models",
        claim="One network conditioned on the step size samples in 1 to 128 steps.",
        paper="CelebA-HQ 256 1-step FID 20.5, 128-step 6.9",
        small=("results", "few_step_toy_cpu.json", _few_step("Shortcut", (1, 2, 4))),
        command="python experiments/few_step_toy.py",
        full="configs/shortcut_dit_b_celebahq256.py; TPU v3-8 ~ days"),
    "imm": dict(
        title="Zhou, Ermon & Song 2025, Inductive Moment Matching",
        claim="Few-step samples from scratch, matching many-step quality.",
        paper="CIFAR-10 FID 1.98 (2 steps); ImageNet 256 1.99 (8 steps)",
        small=("results", "few_step_toy_cpu.json", _few_step("IMM", (1, 2, 4))),
        command="python experiments/few_step_toy.py",
        full="configs/imm_cifar10.py, configs/imm_imagenet256.py"),
    "ddgan": dict(
        title="Xiao, Kreis & Vahdat 2022, Denoising Diffusion GANs",
        claim="A few-step diffusion chain with GAN-learned multimodal denoisers covers modes "
              "a one-step GAN misses.",
        paper="CIFAR-10 FID 3.75 with T = 4",
        small=("results", "gan_mixture25_cpu.json",
               _gan("ddgan T=4", "ddgan T=1 (plain GAN)", "T = 4 covers more modes than T = 1")),
        command="python experiments/gan_mixture25.py",
        full="configs/ddgan_cifar10.py; 4 V100 ~ 2 days; FID 3.75"),
    "diffusion_gan": dict(
        title="Wang et al. 2023, Diffusion-GAN",
        claim="Instance noise from an adaptive diffusion stabilises GAN training.",
        paper="CIFAR-10 FID 3.19 (StyleGAN2 backbone)",
        small=("results", "gan_mixture25_cpu.json",
               _gan("diffusion-gan", "same GAN, no instance noise",
                    "instance noise covers more modes")),
        command="python experiments/gan_mixture25.py",
        full="configs/diffusion_gan_cifar10.py"),
    "els": dict(
        title="Kamb & Ganguli 2024, An analytic theory of creativity in convolutional "
              "diffusion models",
        claim="The equivariant local score machine predicts what trained CNN denoisers "
              "generate (median r^2 ~ 0.9), while the ideal score machine memorises.",
        paper="median r^2 per data set (MNIST, CIFAR-10, ...; the paper's table)",
        small=("results", "els_creativity_cpu.json", None),
        command="python experiments/els_creativity.py",
        full="the paper's CNNs on MNIST / CIFAR-10; GPU-hours"),
    "lumos": dict(
        title="Lumos: learning visual generative priors without text",
        claim="A DiT conditioned on image embeddings learns a transferable generative prior.",
        paper="(image-to-image and downstream tables)",
        small=None, why_not="the image-conditioned prior and its DINO encoder are not built "
                            "yet (issue 18)",
        full="not available yet"),
}
