"""RefSAM: SAM + adapters + Cross-Modal MLP + HDA + track token (REFSAM_SPEC data flow)."""
from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import accel
from ..config import RefSAMConfig
from ..errors import PromptError
from ..sam import build_sam
from .adapter import AdaptedImageEncoder
from .cross_modal import CrossModalMLP
from .channels_last import mask_prompt_factors
from .decoder import add_dense_prompt, first_layer_inputs, predict_masks
from .features import DecodeOutput, FrameFeatures, TextPrompt  # noqa: F401  (re-exported)
from .fast_attention import enable_fast_attention, fast_attention_enabled
from .hda import HierarchicalDenseAttention
from .resolution import check_image_size, set_sam_geometry
from .tracking import ImplicitTrackingModule

# Logit given to the inside/outside of a binary mask turned into a mask prompt [ours].
MASK_PROMPT_LOGIT = 8.0
TRAINABLE_PARTS = ("adapters", "text_mlp", "hda", "itm", "mask_decoder")
FROZEN_PARTS = ("image_encoder", "prompt_encoder")


class RefSAM(nn.Module):
    """Referring video segmentation on top of segment_anything's ``Sam``.

    State dict layout: ``sam.*`` (official SAM keys), ``adapters.*``, ``text_mlp.*``, ``hda.*``,
    ``itm.*``; the frozen text encoder (``text_encoder.*``) is never saved with the weights.
    """

    def __init__(self, config: RefSAMConfig, text_encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        sam_cfg = config.sam
        dim = sam_cfg.prompt_embed_dim
        self.sam = build_sam(sam_cfg)
        self.adapters = AdaptedImageEncoder(
            sam_cfg.encoder_embed_dim, config.adapted_blocks, config.hierarchy_blocks,
            config.adapter_ratio, config.parallel_adapter_scale,
        )
        self.text_mlp = CrossModalMLP(config.text_dim, dim)
        self.hda = HierarchicalDenseAttention(sam_cfg.encoder_embed_dim, dim, len(config.hierarchy_blocks))
        self.itm = ImplicitTrackingModule(dim, config.itm_mlp_dim, config.itm_num_heads)
        self.text_encoder = text_encoder
        # False for plain SAM weights with untrained RefSAM heads: text objects are then refused.
        self.heads_trained = True
        # Runtime speed options (issue 7); none of them is saved with the weights.
        self.native_config = config  # what save_refsam writes; config differs after set_image_size
        self.encoder_dtype: torch.dtype | None = None  # bf16 autocast of the image encoder
        self.device_preprocess = False  # resize on the model device instead of PIL
        self._compiled_encoder: accel.CompiledOrEager | None = None
        self.freeze_base()
        self.eval()

    # ----------------------------------------------------------------- parameters
    def part_modules(self) -> dict[str, nn.Module]:
        """Named components for parameter accounting and per-module learning rates."""
        parts = {
            "image_encoder": self.sam.image_encoder, "prompt_encoder": self.sam.prompt_encoder,
            "mask_decoder": self.sam.mask_decoder, "adapters": self.adapters,
            "text_mlp": self.text_mlp, "hda": self.hda, "itm": self.itm,
        }
        if self.text_encoder is not None:
            parts["text_encoder"] = self.text_encoder
        return parts

    def freeze_base(self, train_sam: bool = False) -> None:
        """Freeze SAM's encoder and prompt encoder (paper default) or train every SAM part."""
        for name, module in self.part_modules().items():
            trainable = name in TRAINABLE_PARTS or (train_sam and name in FROZEN_PARTS)
            module.requires_grad_(trainable)

    @property
    def device(self) -> torch.device:
        return self.sam.pixel_mean.device

    @property
    def weights_id(self) -> str:
        """Signature of the current weights (recomputed each time: weights may be trained in place)."""
        from ..weights import weights_signature

        return weights_signature(self)

    # ----------------------------------------------------------------- speed options (issue 7)
    def enable_fast_attention(self, enabled: bool = True) -> "RefSAM":
        """SDPA attention with the rel-pos bias in every encoder block (same results, less time
        and memory; modeling/fast_attention.py). State dict unchanged."""
        enable_fast_attention(self.sam.image_encoder, enabled)
        return self

    @property
    def fast_attention(self) -> bool:
        return fast_attention_enabled(self.sam.image_encoder)

    def enable_bf16(self, enabled: bool | str = "auto") -> bool:
        """Run the image encoder under bf16 autocast; outputs are returned in fp32.

        "auto": on where bf16 is a speed-up (Ampere+ CUDA; CPUs with AVX512-BF16/AMX). True
        forces it on any device (slow where bf16 is emulated). Returns whether it is now on.
        """
        if enabled == "auto":
            enabled = accel.bf16_supported(self.device)
        self.encoder_dtype = torch.bfloat16 if enabled else None
        return bool(enabled)

    def enable_device_preprocess(self, enabled: bool = True) -> "RefSAM":
        """Resize frames on the model device (torch bilinear + antialias) instead of PIL.

        Only uint8 frames cross the bus. Not bit-identical with SamPredictor's PIL path (pixels
        differ by about one grey level), so it is off by default.
        """
        self.device_preprocess = bool(enabled)
        return self

    def compile_encoder(self, mode: str | None = None, dynamic: bool | None = None,
                        warmup_batch: int | None = 1) -> bool:
        """``torch.compile`` the image encoder (adapters included); optional and safe.

        mode: torch.compile's mode (None, "max-autotune-no-cudagraphs", ...); dynamic: as in
        torch.compile (None: a second batch size recompiles once with a dynamic batch). With
        ``warmup_batch`` a batch of that size is compiled now (pass the encoding batch size;
        minutes on CPU). If compiling fails (now or on a later call) a warning is issued and
        the eager encoder is used. Returns whether the compiled encoder is in use.
        Call after set_image_size / enable_bf16 (a change only recompiles, but costs that time).
        """
        size = self.config.sam.image_size
        example = None
        if warmup_batch:
            example = (torch.zeros(warmup_batch, 3, size, size, device=self.device),)
        with accel.autocast(self.device, self.encoder_dtype):
            self._compiled_encoder = accel.compile_function(self._run_encoder, mode, dynamic, example)
        return self._compiled_encoder.active

    def set_image_size(self, image_size: int | None = None) -> "RefSAM":
        """Run the encoder at another input size (e.g. 512 or 768 for ViT-B on CPU); None = native.

        A speed/quality trade-off (modeling/resolution.py): fewer tokens, a coarser embedding and
        mask grid. Weights are untouched; ``config`` follows the size, and with it ``weights_id``
        (the feature-cache key, which hashes the config); ``native_config`` is what gets saved.
        """
        native = self.native_config
        size = native.sam.image_size if image_size is None else check_image_size(image_size, native.sam.patch_size)
        set_sam_geometry(self.sam, size, native.sam.patch_size)
        if size == native.sam.image_size:
            self.config = native
        else:
            self.config = dataclasses.replace(native, sam=dataclasses.replace(native.sam, image_size=size))
        return self

    @contextlib.contextmanager
    def reference_path(self):
        """Temporarily run exactly the reference computation (segment_anything's attention, fp32,
        eager, PIL preprocessing, native input size); every speed option is restored after."""
        saved = (self.fast_attention, self.encoder_dtype, self._compiled_encoder, self.device_preprocess,
                 self.config.sam.image_size)
        self.enable_fast_attention(False)
        self.encoder_dtype, self._compiled_encoder, self.device_preprocess = None, None, False
        self.set_image_size(None)
        try:
            yield self
        finally:
            self.enable_fast_attention(saved[0])
            self.encoder_dtype, self._compiled_encoder, self.device_preprocess = saved[1:4]
            self.set_image_size(saved[4])

    def speed_options(self) -> dict:
        """The runtime options in use (for benchmarks and logs)."""
        return {
            "fast_attention": self.fast_attention,
            "bf16": self.encoder_dtype is not None,
            "compiled": self._compiled_encoder is not None and self._compiled_encoder.active,
            "image_size": self.config.sam.image_size,
            "device_preprocess": self.device_preprocess,
        }

    # ----------------------------------------------------------------- images
    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """Size of a frame after resizing its longest side to the encoder size (SAM's rule)."""
        scale = self.config.sam.image_size / max(height, width)
        return int(height * scale + 0.5), int(width * scale + 0.5)

    def preprocess(self, frames) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
        """uint8 RGB (B, H, W, 3) or (H, W, 3) -> normalised, padded (B, 3, S, S) on the model device.

        Resizing is PIL bilinear on uint8, exactly as SamPredictor does it.
        """
        frames = frames.cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"expected uint8 RGB frames (B, H, W, 3), got {frames.dtype} {frames.shape}")
        height, width = frames.shape[1:3]
        new_h, new_w = self.resized_size(height, width)
        if self.device_preprocess:
            images = accel.preprocess_on_device(
                frames, (new_h, new_w), self.config.sam.image_size, self.sam.pixel_mean, self.sam.pixel_std
            )
            return images, (new_h, new_w), (height, width)
        if (new_h, new_w) != (height, width):
            frames = np.stack([self.resize_for_encoder(f) for f in frames])
        # uint8 crosses the bus (4x less than float); pinned + non-blocking on CUDA (accel.to_device).
        images = accel.to_device(frames, self.device).permute(0, 3, 1, 2).float()
        images = (images - self.sam.pixel_mean) / self.sam.pixel_std
        size = self.config.sam.image_size
        images = F.pad(images, (0, size - new_w, 0, size - new_h))
        return images, (new_h, new_w), (height, width)

    def resize_for_encoder(self, frame: np.ndarray) -> np.ndarray:
        """One uint8 (H, W, 3) frame resized as ``preprocess`` resizes it (PIL bilinear, longest side
        to the encoder size). ``preprocess`` leaves a frame of that size as it is, so a video
        reader's thread can do this ahead of the encoder (FeatureCache does). Unchanged when the
        resize runs on the device (``device_preprocess``) or is not needed.
        """
        from PIL import Image

        new_h, new_w = self.resized_size(*frame.shape[:2])
        if self.device_preprocess or (new_h, new_w) == frame.shape[:2]:
            return frame
        return np.asarray(Image.fromarray(frame).resize((new_w, new_h), Image.BILINEAR))

    def _run_encoder(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.adapters(self.sam.image_encoder, images)

    def run_encoder(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Preprocessed (B, 3, S, S) -> neck (B, C, h, w), hierarchy [(B, h, w, E)] x 3, through
        the compiled encoder and bf16 autocast when enabled (outputs then cast back to fp32)."""
        run = self._compiled_encoder or self._run_encoder
        if self.encoder_dtype is None:
            return run(images)
        with accel.autocast(images.device, self.encoder_dtype):
            neck, hierarchy = run(images)
        return neck.float(), [h.float() for h in hierarchy]

    def encode_images(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Preprocessed (B, 3, S, S) -> F (B, C, h, w), F_h (B, C, h, w)."""
        neck, hierarchy = self.run_encoder(images)
        return neck, self.hda.hierarchy_features(hierarchy)

    def encode_frames(self, frames) -> FrameFeatures:
        """uint8 RGB frames (B, H, W, 3) of one video -> their cacheable features."""
        images, input_size, original_size = self.preprocess(frames)
        embedding, hier = self.encode_images(images)
        return FrameFeatures(embedding, hier, input_size, original_size)

    @torch.no_grad()
    def image_embedding(self, frames) -> torch.Tensor:
        """(B, 256, h, w) SAM neck output; equals SamPredictor.get_image_embedding() for fresh adapters."""
        images, _, _ = self.preprocess(frames)
        return self.run_encoder(images)[0]

    # ----------------------------------------------------------------- text
    def project_text(self, words: torch.Tensor, mask: torch.Tensor) -> TextPrompt:
        """Encoder outputs (B, N, d_text), (B, N) -> projected words W and sentence ŝ."""
        mask = mask.bool()
        weights = mask.to(words.dtype).unsqueeze(-1)
        sentence = (words * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return TextPrompt(self.text_mlp(words), mask, self.text_mlp(sentence))

    def encode_text(self, texts) -> TextPrompt:
        """Expressions (list of str) -> TextPrompt on the model device."""
        if self.text_encoder is None:
            raise PromptError("this model has no text encoder; load it with text_encoder=... to use expressions")
        if not self.heads_trained:
            raise PromptError(
                "text objects need trained RefSAM weights; this model has plain SAM weights with untrained "
                "RefSAM heads. Load a RefSAM .safetensors file, or use box/point/mask prompts"
            )
        feats = self.text_encoder(list(texts) if not isinstance(texts, str) else [texts])
        return self.project_text(feats.words.to(self.device), feats.mask.to(self.device))

    # ----------------------------------------------------------------- prompts
    def transform_coords(self, coords: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """xy pixel coordinates (..., 2) or xyxy boxes (..., 4) of the frame -> resized-input coordinates."""
        new_h, new_w = self.resized_size(*original_size)
        scale = torch.tensor([new_w / original_size[1], new_h / original_size[0]], device=coords.device)
        if coords.shape[-1] == 4:
            scale = scale.repeat(2)
        return coords.float().to(self.device) * scale.to(self.device)

    def mask_to_prompt(self, masks: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
        """Binary frame masks (B, H, W) -> mask-prompt logits (B, 1, 4h, 4w) in SAM's geometry."""
        size = self.config.sam.image_size
        low = 4 * self.config.sam.embedding_size
        m = masks.float().unsqueeze(1).to(self.device)
        m = F.interpolate(m, input_size, mode="bilinear", align_corners=False)
        m = F.pad(m, (0, size - input_size[1], 0, size - input_size[0]))
        m = F.interpolate(m, (low, low), mode="bilinear", align_corners=False)
        return (m * 2.0 - 1.0) * MASK_PROMPT_LOGIT

    def postprocess(self, low_res: torch.Tensor, input_size: tuple[int, int],
                    original_size: tuple[int, int]) -> torch.Tensor:
        """Low-res logits (B, 1, 4h, 4w) -> frame logits (B, H, W) (SAM's postprocess_masks)."""
        size = self.config.sam.image_size
        x = F.interpolate(low_res, (size, size), mode="bilinear", align_corners=False)
        x = x[..., : input_size[0], : input_size[1]]
        return F.interpolate(x, original_size, mode="bilinear", align_corners=False)[:, 0]

    # ----------------------------------------------------------------- decoding
    def dense_pe(self, flat: bool = False) -> torch.Tensor:
        """SAM's dense positional encoding (1, C, h, w), or (1, hw, C) contiguous with ``flat``:
        cached, as it depends only on a buffer and the grid.

        The key includes the buffer's version counter, so loading weights invalidates it.
        """
        pe = self.sam.prompt_encoder
        gaussian = pe.pe_layer.positional_encoding_gaussian_matrix
        key = (gaussian.device, gaussian._version, gaussian.data_ptr(), tuple(pe.image_embedding_size))
        cached = getattr(self, "_dense_pe_cache", None)
        if cached is None or cached[0] != key or torch.is_grad_enabled():
            value = pe.get_dense_pe()
            value = (value, value.flatten(2).transpose(1, 2).contiguous())
            if torch.is_grad_enabled():
                return value[int(flat)]
            self._dense_pe_cache = cached = (key, value)
        return cached[1][int(flat)]

    def text_conditioned(self, features: FrameFeatures, text: TextPrompt, batch: int | None = None) -> torch.Tensor:
        """F̄ + HDA(F̄, F_h, [words; sentence]) as (B, h·w, C) rows, contiguous: the text path's
        image input before the dense prompt is added, in the decoder's layout. It depends on the
        frame and the expression only (not on τ or a mask prompt), so a video session keeps it
        per (expression, frame)."""
        batch = batch or max(len(features), text.words.shape[0])
        normed = F.normalize(features.embedding.expand(batch, -1, -1, -1), dim=1)
        words = text.words.expand(batch, -1, -1)
        keys = torch.cat([words, text.sentence.expand(batch, -1).unsqueeze(1)], dim=1)
        word_mask = text.mask.expand(batch, -1)
        key_mask = torch.cat([word_mask, torch.ones_like(word_mask[:, :1])], dim=1)
        conditioned = normed + self.hda(normed, features.hier.expand(batch, -1, -1, -1), keys, key_mask)
        return conditioned.flatten(2).transpose(1, 2).contiguous()

    def first_layer_inputs(self, conditioned: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The decoder's first-layer image projections of ``text_conditioned`` rows (B, h·w, C),
        kept with them by a video session (see ``decoder.first_layer_inputs``)."""
        return first_layer_inputs(self.sam.mask_decoder.transformer, conditioned, self.dense_pe(flat=True))

    def decode(self, features: FrameFeatures, text: TextPrompt | None = None, track: torch.Tensor | None = None,
               mask_prompt: torch.Tensor | None = None, boxes: torch.Tensor | None = None,
               points: tuple[torch.Tensor, torch.Tensor] | None = None,
               track_valid: torch.Tensor | None = None, conditioned: torch.Tensor | None = None,
               first_layer: tuple | None = None) -> DecodeOutput:
        """One decode step for B objects on the same (or B) frames.

        features: embedding/hier with batch 1 (broadcast) or B; text: TextPrompt (B) or None for a
        prompt-only SAM decode (then src = F, exactly SAM's path); track: τ_{t-1} (B, C) or None;
        track_valid (B,) bool marks which rows have a τ; mask_prompt (B, 1, 4h, 4w) logits;
        boxes (B, 4) xyxy and points ((B, K, 2), (B, K)) in resized-input coordinates;
        conditioned (B, h·w, C): ``text_conditioned(features, text)`` computed before (skips HDA);
        first_layer: ``decoder.first_layer_inputs`` of ``conditioned`` (skips three projections).
        """
        if first_layer is not None and (conditioned is None or text is None):
            raise ValueError("first_layer needs the text-conditioned rows it was projected from (conditioned=)")
        batch = max(
            len(features), 1 if text is None else text.words.shape[0],
            *(x.shape[0] for x in (track, mask_prompt, boxes) if x is not None),
            points[0].shape[0] if points is not None else 1,
        )
        pe = self.sam.prompt_encoder
        sparse, _ = pe(points=points, boxes=boxes, masks=None)  # the dense part is made here, as rows
        if sparse.shape[0] != batch:
            sparse = sparse.expand(batch, -1, -1)
        if mask_prompt is None:
            hidden, weight, bias = None, None, pe.no_mask_embed.weight[0]
            dense = bias.view(1, 1, -1)
        else:
            hidden, weight, bias = mask_prompt_factors(pe, mask_prompt)
            dense = F.linear(hidden, weight, bias)
        tokens = [sparse]
        masks = [torch.ones(sparse.shape[:2], dtype=torch.bool, device=sparse.device)]
        if text is None:
            src = features.embedding.flatten(2).transpose(1, 2).expand(batch, -1, -1) + dense
        else:
            if conditioned is None:
                conditioned = self.text_conditioned(features, text, batch)
            src = conditioned.expand(batch, -1, -1) + dense
            tokens.insert(0, text.words.expand(batch, -1, -1))
            masks.insert(0, text.mask.expand(batch, -1))
        if track is not None:
            tokens.append(track.unsqueeze(1))
            valid = torch.ones(batch, dtype=torch.bool, device=track.device) if track_valid is None else track_valid
            masks.append(valid.view(batch, 1))
        prompt_tokens = torch.cat(tokens, dim=1)
        # Decided on the host (no device sync): only words and an optional track token can be
        # padding; box/point prompts alone are exactly SAM's computation, without a mask.
        prompt_mask = torch.cat(masks, dim=1) if text is not None or track_valid is not None else None
        first = None
        if first_layer is not None:
            first = add_dense_prompt(self.sam.mask_decoder.transformer, first_layer, hidden, weight, bias)
            first = tuple(x.expand(batch, -1, -1) for x in first)
        logits, iou, mask_token = predict_masks(
            self.sam.mask_decoder, src, tuple(features.embedding.shape[-2:]), self.dense_pe(flat=True),
            prompt_tokens, prompt_mask, first,
        )
        if track is not None and track_valid is not None:
            previous = track * track_valid.view(-1, 1).to(track.dtype)
        else:
            previous = track
        return DecodeOutput(logits, iou, mask_token, self.itm(mask_token, previous))
