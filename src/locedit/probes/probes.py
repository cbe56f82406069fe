"""Probe records (`{"prompt", "subject", "attribute", "value"?, "altered"?}` per JSONL line): parsing and validation.

A probe names a prompt, the subject whose word embeddings tracing corrupts, the attribute the
subject controls (object, style, colour, action, viewpoint, or any other name), and optionally the
value a scorer should look for (e.g. the colour "red"); without it the subject text is used.
LocoGen (locedit.trace.locogen) also needs `altered`: the prompt with the attribute removed or
updated (e.g. "a painting" for "a painting by van gogh").

Attribute names are spelled as the built-in world spells them ("colour"); "color" is read as
"colour" wherever an attribute is named (probe files, suite files, Probe and EvalItem objects).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from locedit.errors import LoceditError
from locedit.io import read_jsonl

# Attributes the shipped probe set covers; user files may name others.
ATTRIBUTES = ("object", "style", "colour", "action", "viewpoint")
# Other spellings of attribute names, read as the name they map to.
ATTRIBUTE_ALIASES = {"color": "colour"}


def attribute_name(name: str) -> str:
    """The attribute name locedit uses for `name` (stripped; "color" -> "colour")."""
    name = name.strip()
    return ATTRIBUTE_ALIASES.get(name, name)


DEFAULT_PROBES = Path(__file__).with_name("default.jsonl")
# A model folder's own default probes: "default" means this file for a model whose folder holds one (its
# prompts fit the model's tokenizer and world), DEFAULT_PROBES otherwise; resolved by locedit.trace.probe_file.
MODEL_PROBES_FILE = "locedit_probes.jsonl"


class ProbeFileError(LoceditError, ValueError):
    """A probe file is missing, malformed, or names a subject that is not in its prompt."""


@dataclass(frozen=True)
class Probe:
    """One traced prompt.

    Attributes:
        prompt: the caption generated from.
        subject: words of `prompt` whose token embeddings are corrupted.
        attribute: what the subject controls (object / style / colour / action / viewpoint / ...);
            "color" is stored as "colour".
        value: the attribute's value a scorer looks for; None means "the subject text".
        altered: the prompt with the attribute removed or updated (LocoGen); None when not given.
    """

    prompt: str
    subject: str
    attribute: str
    value: str | None = None
    altered: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "attribute", attribute_name(self.attribute))

    @property
    def target_text(self) -> str:
        """Text a text-image scorer compares the image with."""
        return self.value or self.subject

    def to_dict(self) -> dict:
        """The record as a dict; "altered" only when given (records and configs of older runs stay as they were)."""
        record = asdict(self)
        if record["altered"] is None:
            del record["altered"]
        return record


def _parse(record: object, where: str) -> Probe:
    if not isinstance(record, dict):
        raise ProbeFileError(f"{where}: expected a JSON object with prompt, subject, attribute; got {record!r}")
    missing = [
        k for k in ("prompt", "subject", "attribute") if not isinstance(record.get(k), str) or not record[k].strip()
    ]
    if missing:
        raise ProbeFileError(
            f"{where}: field(s) {', '.join(missing)} missing or empty; each record needs "
            '{"prompt": ..., "subject": ..., "attribute": ...} (and optionally "value")'
        )
    value = record.get("value")
    if value is not None and not isinstance(value, str):
        raise ProbeFileError(f'{where}: "value" must be a string when given (got {value!r})')
    altered = record.get("altered")
    if altered is not None and (not isinstance(altered, str) or not altered.strip()):
        raise ProbeFileError(f'{where}: "altered" must be a non-empty string when given (got {altered!r})')
    return Probe(
        prompt=record["prompt"], subject=record["subject"], attribute=record["attribute"], value=value, altered=altered
    )


def load_probes(source: str | Path) -> list[Probe]:
    """Probes from a JSONL file, or the generic shipped set when `source` is "default" (runs resolve
    "default" to a model folder's own MODEL_PROBES_FILE first: locedit.trace.probe_file).

    Blank lines and lines starting with "#" are skipped. Raises ProbeFileError naming the line.
    """
    path = DEFAULT_PROBES if str(source) == "default" else Path(source).expanduser()
    if not path.is_file():
        raise ProbeFileError(f"probe file {str(path)!r} not found; give a JSONL file or 'default'")
    probes = [_parse(record, where) for record, where in read_jsonl(path, ProbeFileError)]
    if not probes:
        raise ProbeFileError(f"probe file {str(path)!r} holds no records")
    return probes


def validate_probes(probes: list[Probe], tokenizers: list) -> None:
    """Check every subject occurs in its prompt as tokens of every tokenizer (raises ProbeFileError)."""
    from locedit.models.text import CaptionTooLongError, SubjectNotFoundError, find_subject_span

    for i, probe in enumerate(probes):
        for tokenizer in tokenizers:
            try:
                find_subject_span(tokenizer, probe.prompt, probe.subject)
                n = len(tokenizer(probe.prompt, truncation=False).input_ids)
                if n > tokenizer.model_max_length:
                    raise CaptionTooLongError(
                        f"prompt is {n} tokens, longer than the context ({tokenizer.model_max_length})"
                    )
            except (SubjectNotFoundError, CaptionTooLongError) as err:
                raise ProbeFileError(f"probe {i + 1} ({probe.prompt!r}, subject {probe.subject!r}): {err}") from None


def check_altered(probes: list[Probe]) -> None:
    """Check every probe has an `altered` prompt (LocoGen feeds it to a window of layers); raises ProbeFileError."""
    for i, probe in enumerate(probes):
        if probe.altered is None:
            raise ProbeFileError(
                f'probe {i + 1} ({probe.prompt!r}) has no "altered" prompt; LocoGen needs one per probe: add '
                '"altered": the prompt with the attribute removed or updated, e.g. "a painting"'
            )
