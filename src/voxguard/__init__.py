"""voxguard: voice-deepfake detection with AASIST."""

__version__ = "0.1.0"
