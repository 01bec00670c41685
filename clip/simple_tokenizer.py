"""OpenAI's `clip.simple_tokenizer` module, for trainer files written against the OpenAI `clip`
package (`from clip.simple_tokenizer import SimpleTokenizer as _Tokenizer`).

The tokenizer is open_clip's copy of OpenAI's byte-level BPE (same merge table, same cleaning:
ftfy, HTML unescape, whitespace collapse, lowercase). open_clip names the two special tokens
`<start_of_text>` / `<end_of_text>`; OpenAI names them `<|startoftext|>` / `<|endoftext|>`, and
trainer files look them up by those names (`_tokenizer.encoder["<|endoftext|>"]`), so this
subclass renames them. Ids are unchanged: 49406 and 49407, vocabulary size 49,408.
"""
import regex as re
from open_clip.tokenizer import (  # noqa: F401  (OpenAI's module exposes these helpers too)
    SimpleTokenizer as _OpenClipTokenizer,
    basic_clean,
    bytes_to_unicode,
    default_bpe,
    get_pairs,
    whitespace_clean,
)

SOT = "<|startoftext|>"
EOT = "<|endoftext|>"
_RENAMED = (("<start_of_text>", SOT), ("<end_of_text>", EOT))


class SimpleTokenizer(_OpenClipTokenizer):
    """`SimpleTokenizer(bpe_path=default_bpe())` with OpenAI's special-token names."""

    def __init__(self, bpe_path=None):
        super().__init__(bpe_path or default_bpe())
        for old, new in _RENAMED:
            idx = self.encoder.pop(old)
            self.encoder[new] = idx
            self.decoder[idx] = new
            self.cache.pop(old, None)
            self.cache[new] = new
        # OpenAI's pre-tokeniser: the special tokens, contractions, letters, single digits, and
        # runs of other non-space characters.
        self.pat = re.compile(
            r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            re.IGNORECASE)
