"""Offline models: `store` (aliases, pinned wheels, `resolve_model`) and `ct2` (CTranslate2 -> HF Whisper).

Nothing is imported here, so `import speechlm_batch.models.store` stays light (numpy / transformers load
only when a model is converted).
"""
