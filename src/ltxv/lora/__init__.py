"""LoRA: files in every key style people ship, merged into the transformer's weights (a weight edit, no new layer).

``read_lora`` parses and checks one file against a transformer (:mod:`ltxv.lora.file`, styles in
:mod:`ltxv.lora.keys`); ``LoraMerger`` merges sets of them and switches between sets (:mod:`ltxv.lora.merge`);
``ltxv.pipelines.loras.LoraRegistry`` names the files of a server-side folder.
"""

from __future__ import annotations

from ltxv.lora.file import LoraError, LoraFactors, LoraFile, linear_shapes, read_lora
from ltxv.lora.merge import LoraMerger, LoraSpec

__all__ = ["LoraError", "LoraFactors", "LoraFile", "LoraMerger", "LoraSpec", "linear_shapes", "read_lora"]
