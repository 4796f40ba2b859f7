"""``voxguard train``: the official AASIST recipe on any labelled data set, resumable and seeded.

``data`` turns labelled files into model inputs, ``augment`` holds the optional real-world channel
augmentations, ``recipe`` the hyper-parameters, schedule and loss, ``run_files`` what a run writes and
reads back, and ``trainer`` the loop that ties them together.
"""

from ..setup_errors import SetupError


class TrainingError(SetupError):
    """A run that cannot start or continue as asked; ``hint`` says what to change."""
