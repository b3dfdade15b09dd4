"""A dataset's class list against the COCO categories its detections are scored with.

A detector predicts contiguous class indices; COCO results name category ids. The
mapping is the categories sorted by id (index i is the i-th smallest id), as
torchvision's and detectron2's COCO loaders build it. If the two lists disagree, every
AP is silently wrong, so a mismatch is an error that names the first difference.
"""

from __future__ import annotations

from collections.abc import Sequence

from cvtrain.errors import UserError


def validate_categories(categories: Sequence[dict], class_names: Sequence[str]) -> list:
    """The category id of each class index, after checking that names agree in order.

    `categories` is the annotations' `categories` list ({id, name}); `class_names` the
    dataset's classes in index order (no background entry).
    """
    ordered = sorted(categories, key=lambda c: c["id"])
    for index, (category, name) in enumerate(zip(ordered, class_names)):
        if category.get("name") != name:
            raise UserError(
                f"class {index} is '{name}' in the dataset but the annotations' category {index} (id "
                f"{category['id']}) is '{category.get('name')}'; use the class list the annotations define."
            )
    if len(ordered) != len(class_names):
        extra = (
            f"category id {ordered[len(class_names)]['id']} ('{ordered[len(class_names)].get('name')}') has no class"
            if len(ordered) > len(class_names)
            else f"class {len(ordered)} ('{class_names[len(ordered)]}') has no category"
        )
        raise UserError(
            f"the dataset has {len(class_names)} classes but the annotations define {len(ordered)} categories: "
            f"{extra}; use the class list the annotations define."
        )
    return [category["id"] for category in ordered]
