"""Text-encoder access: the encoders of a pipeline, tokenization as the pipeline does it, subject spans."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from locedit.errors import InvalidInputError, LoceditError
from locedit.models.families import (
    Family,
    describe_text_encoder,
    detect_family,
    num_text_layers,
    resolve_text_module,
    text_template,
)


class SubjectNotFoundError(LoceditError, ValueError):
    """The subject's tokens do not occur in the caption."""


class CaptionTooLongError(LoceditError, ValueError):
    """The caption has more tokens than the text encoder's context."""


@dataclass
class TextEncoderHandle:
    """One text encoder of a pipeline with its tokenizer.

    Attributes:
        name: the pipeline attribute ("text_encoder" or "text_encoder_2").
        index: 0-based position among the pipeline's text encoders (as --encoder and TextCell.encoder count).
        encoder: the CLIP text model.
        tokenizer: its CLIP tokenizer.
    """

    name: str
    index: int
    encoder: torch.nn.Module
    tokenizer: object

    @property
    def context_length(self) -> int:
        return int(self.tokenizer.model_max_length)

    @property
    def num_layers(self) -> int:
        return num_text_layers(self.encoder)

    @property
    def kind(self) -> str:
        """What the encoder is, from its config's sizes (families.describe_text_encoder)."""
        return describe_text_encoder(self.encoder.config)

    def module(self, kind: str, layer: int | None = None) -> torch.nn.Module:
        """Submodule by template kind (see TEXT_TEMPLATES), e.g. module("attn_out", 0)."""
        fields = {} if layer is None else {"layer": layer}
        return resolve_text_module(self.encoder, text_template(kind, **fields))

    def tokenize(self, captions: list[str]) -> torch.Tensor:
        """Token ids (B, context_length), padded to the context as the pipelines pad them.

        Raises CaptionTooLongError instead of silently truncating.
        """
        ids = []
        for caption in captions:
            row = self.tokenizer(caption, truncation=False).input_ids
            if len(row) > self.context_length:
                raise CaptionTooLongError(
                    f"caption {caption!r} is {len(row)} tokens; {self.name}'s context is "
                    f"{self.context_length} (with start and end tokens): shorten the caption or template"
                )
            ids.append(row)
        padded = self.tokenizer.pad({"input_ids": ids}, padding="max_length", max_length=self.context_length)
        return torch.tensor(padded["input_ids"], dtype=torch.long)


def text_encoders(pipe, which: str | int | None = None) -> list[TextEncoderHandle]:
    """The pipeline's text encoders as handles.

    Args:
        which: None/"both"/"all" for every encoder, or the 0-based index of one (0 / 1 for SDXL's,
            also "0"/"1").
    """
    family: Family = detect_family(pipe)
    handles = [
        TextEncoderHandle(name=enc, index=i, encoder=getattr(pipe, enc), tokenizer=getattr(pipe, tok))
        for i, (enc, tok) in enumerate(zip(family.text_encoders, family.tokenizers))
    ]
    if which is None or str(which) in ("both", "all"):
        return handles
    try:
        index = int(which)
    except (TypeError, ValueError):
        index = -1
    if not 0 <= index < len(handles):
        choices = ", ".join(str(h.index) for h in handles) + (", both" if len(handles) > 1 else "")
        raise InvalidInputError(
            f"encoder {which!r} does not exist in this {family.name} pipeline (encoders count from 0); choose {choices}"
        )
    return [handles[index]]


def find_subject_span(tokenizer, caption: str, subject: str) -> tuple[int, int]:
    """Token span [start, end) of `subject` inside `caption`, as positions of the encoded caption.

    Positions count the start token, so they index the encoder's hidden states directly. The
    subject may sit anywhere in the caption and span several BPE tokens ("van gogh" is two); the
    first occurrence is taken. CLIP's tokenizer splits words before BPE, so a whole-word subject
    tokenizes the same alone as in context.
    """
    sub = tokenizer(subject, add_special_tokens=False).input_ids
    if not subject.strip() or not sub:
        raise SubjectNotFoundError(f"empty subject in caption {caption!r}")
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and unk in sub:
        raise SubjectNotFoundError(
            f"subject {subject!r} has words this model's tokenizer does not know (they map to "
            f"{tokenizer.unk_token!r}); use words of its vocabulary"
        )
    ids = tokenizer(caption, truncation=False).input_ids
    n = len(sub)
    for start in range(len(ids) - n + 1):
        if ids[start : start + n] == sub:
            return start, start + n
    raise SubjectNotFoundError(
        f"subject {subject!r} (tokens {tokenizer.convert_ids_to_tokens(sub)}) does not occur in caption "
        f"{caption!r}; the caption must contain the subject as whole words (check spelling and templates: "
        "each template needs a '{}' where the subject goes)"
    )
