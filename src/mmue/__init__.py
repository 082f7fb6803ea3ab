"""MMUE: Multimodal Unlearnable Examples — protect image-caption data against CLIP training."""
__version__ = "0.1.0"
