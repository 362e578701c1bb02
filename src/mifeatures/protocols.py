"""The two ways of running the experiment, a wildcard of the workflow.

``faithful`` is the article's, flaws kept; ``corrected`` fixes them (see docs/protocols.md): the prior played
adversarially in training (``ADVERSARIAL_PRIOR``), and eval-mode, aligned, bias-corrected scoring
(``mifeatures.corrected_scoring``). A module of its own, without imports, so that the stages
that need the names do not depend on, and rerun with, anything else.
"""

PROTOCOLS = ("faithful", "corrected")
# What each protocol trains: the corrected one plays the prior as the official DIM code does.
ADVERSARIAL_PRIOR = {"faithful": False, "corrected": True}
# The module that scores by each protocol; the score stage imports it by name, so that a job's code is
# the stage's and its own scorer's (``sources.modules("score", SCORERS[protocol])``).
SCORERS = {"faithful": "scoring", "corrected": "corrected_scoring"}
