"""A data-set classifier's Inception-Score analogue, for small data sets without Inception.

For the embedded 8x8 digits (and any labelled in-memory set) a multinomial logistic
regression is fitted on the *training* images; generated samples are then scored with the
Inception-Score formula ``exp E_x KL(p(y|x) || p(y))`` (:func:`diffjax.metrics.inception_score`)
and the mean top-class probability. Both are high only when samples are confidently
classifiable (sharp, digit-like) *and* cover the classes. Reported beside the same numbers
for held-out real images (the ceiling) and for a Gaussian fit to the training data (what
matching first and second moments alone achieves).
"""

from __future__ import annotations

import hashlib

import numpy as np

from diffjax.metrics.fid import inception_score

__all__ = ["fit_classifier", "classifier_score"]


_FITTED: dict = {}


def fit_classifier(images, labels, max_iter: int = 3000, seed: int = 0):
    """Fit scikit-learn's logistic regression on flattened images (seconds for 1,500 digits).

    Fits are memoised by the data's content (a training run and its resume score against the
    same training set); the returned estimator is only used for prediction.
    """
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(images, np.float64).reshape(len(images), -1)
    y = np.asarray(labels)
    key = (hashlib.sha1(x.tobytes()).hexdigest(), hashlib.sha1(y.tobytes()).hexdigest(),
           x.shape, max_iter, seed)
    if key not in _FITTED:
        _FITTED.clear()  # keep one: the memo is for repeated scoring of one data set
        _FITTED[key] = LogisticRegression(max_iter=max_iter, random_state=seed).fit(x, y)
    return _FITTED[key]


def classifier_score(clf, images) -> dict:
    """``{'score': IS analogue (1 split), 'confidence': mean max probability}`` of ``images``."""
    p = clf.predict_proba(np.asarray(images, np.float64).reshape(len(images), -1))
    return {"score": inception_score(p, splits=1)[0], "confidence": float(p.max(axis=1).mean())}
