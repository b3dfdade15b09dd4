"""CycleGAN's image history (Shrivastava et al. 2017): the discriminators see fakes of
earlier generators too, so they do not chase the newest generator alone (oscillation).

As the reference's ImagePool: until `size` fakes are stored each new one is stored and
used; then each new fake is, with probability 1/2, swapped for a random stored one
(which is used in its place), else used as is. Draws come from torch's random stream,
which checkpoints save and restore; the stored images are part of the task's
checkpoint state, so a resumed run sees the history it would have seen.
"""

from __future__ import annotations

import torch


class ImagePool:
    """A history of up to `size` generated images (0: no history, the newest are used)."""

    def __init__(self, size: int = 50):
        self.size = int(size)
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """A batch as large as `images` (detached), drawn as the module docstring says."""
        images = images.detach()
        if self.size <= 0:
            return images
        out = []
        for image in images:
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif float(torch.rand(())) > 0.5:
                k = int(torch.randint(self.size, ()))
                out.append(self.images[k].clone())
                self.images[k] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"images": torch.stack(self.images).cpu()} if self.images else {}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        self.images = [image.to(device) for image in state["images"]] if state.get("images") is not None else []
