"""Structured-config schemas: the types and defaults every YAML file is checked against.

Hydra merges each YAML file onto these dataclasses, so a misspelt key or a value of
the wrong type fails while the config is composed, before any model is built. Model
schemas are per family (a classifier has no `cell`, a recurrent model no
`freeze_backbone`); each conf/model/*.yaml names its family's schema in its defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from omegaconf import MISSING


class Mode(str, Enum):
    train = "train"
    eval = "eval"
    predict = "predict"


class Precision(str, Enum):
    """`auto` is bf16 autocast on CUDA GPUs that support it, else fp32."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Progress(str, Enum):
    """`auto` shows a rich bar on a terminal and plain periodic lines elsewhere."""

    auto = "auto"
    rich = "rich"
    plain = "plain"
    none = "none"


@dataclass
class TaskConfig:
    name: str = MISSING
    families: list[str] = field(default_factory=list)  # model families the task accepts
    monitor: str = MISSING  # metric that picks checkpoints/best.pt
    monitor_mode: str = "max"  # max | min
    metrics: list[str] = field(default_factory=list)
    topk: list[int] = field(default_factory=lambda: [1, 5])
    augment: bool = False  # random horizontal flips, on the device
    confusion_matrix: bool = True  # save a confusion-matrix image at each evaluation
    coco_backend: str = "pycocotools"  # detection: pycocotools | faster_coco_eval (same stats, faster)
    score_threshold: float = 0.5  # detection: boxes drawn in images and printed by mode=predict


@dataclass
class ClassifierModelConfig:
    name: str = MISSING
    family: str = "classifier"
    weights: Optional[str] = None  # local file with pretrained weights; never downloaded
    freeze_backbone: bool = False
    dropout: float = 0.0
    width: int = 16  # base channels of the small CNN


@dataclass
class RecurrentModelConfig:
    """A recurrent language model, or the decoder of a CNN+RNN captioner."""

    name: str = MISSING  # rnn | gru | lstm
    family: str = "recurrent"
    cell: str = "course"  # course: the course's equations; fused: torch.nn.RNN/GRU/LSTM (cuDNN)
    embed_dim: int = 128
    hidden_dim: int = 256
    num_layers: int = 1
    dropout: float = 0.0
    encoder: str = "cnn"  # captioning: the image encoder, a classifier model name
    encoder_weights: Optional[str] = None  # local weights file for the encoder
    freeze_encoder: bool = False
    encoder_width: int = 16  # base channels of the small CNN encoder
    encoder_grid: int = 4  # keep a grid x grid map of image features (where things are)
    attention: bool = False  # captioning: attend over the grid at every step (Show, Attend and Tell)


@dataclass
class SegmenterModelConfig:
    """An encoder-decoder that labels every pixel (segmentation task)."""

    name: str = MISSING  # unet | encoder_decoder | fcn | deeplabv3
    family: str = "segmenter"
    width: int = 16  # base channels of the course models (unet, encoder_decoder)
    depth: int = 4  # down-sampling stages of the course models
    backbone: str = "resnet50"  # fcn / deeplabv3 (torchvision): resnet50 | resnet101 | mobilenet_v3_large
    backbone_weights: Optional[str] = None  # local ImageNet weights file for the backbone; never downloaded
    weights: Optional[str] = None  # local file with a whole model's weights
    freeze_backbone: bool = False
    aux_loss: bool = False  # fcn / deeplabv3: the auxiliary head on an earlier stage
    aux_weight: float = 0.5  # loss = out + aux_weight * aux (torchvision's reference scripts: 0.5; mmseg: 0.4)
    dropout: float = 0.0


@dataclass
class DetectorModelConfig:
    """A torchvision detector (detection and instance_segmentation tasks)."""

    name: str = MISSING  # faster_rcnn | retinanet | fcos | ssd | mask_rcnn
    family: str = "detector"  # mask_rcnn: instance_segmenter
    backbone: str = "small"  # small (a CPU backbone for the course) | resnet18 | resnet50 | mobilenet_v3_large
    backbone_weights: Optional[str] = None  # local ImageNet weights file for the backbone; never downloaded
    weights: Optional[str] = None  # local file with a whole detector's weights
    trainable_layers: int = 5  # backbone stages trained (torchvision's trainable_backbone_layers)
    width: int = 32  # base channels of the small backbone
    fpn_channels: int = 64  # channels of the feature pyramid (torchvision default: 256)
    min_size: int = 128  # the model's transform resizes the shorter image side to this ...
    max_size: int = 128  # ... and the longer side to at most this
    anchor_sizes: list[int] = field(default_factory=lambda: [16, 32, 64])  # one per feature level
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    score_thresh: float = 0.05  # detections kept for evaluation
    nms_thresh: float = 0.5
    detections_per_img: int = 100
    topk_candidates: int = 300  # retinanet / fcos / ssd: best-scoring boxes per level before NMS
    head_convs: int = 4  # fcos: conv layers of each head branch (torchvision default: 4)
    # Faster / Mask R-CNN sampling: torchvision's defaults (2000/1000 proposals, 256 anchors
    # and 512 RoIs per image) are sized for 800-pixel COCO images with dozens of objects.
    rpn_pre_nms_top_n_train: int = 300  # proposals per level before the RPN's NMS
    rpn_pre_nms_top_n_test: int = 200
    rpn_post_nms_top_n_train: int = 150  # proposals kept after it
    rpn_post_nms_top_n_test: int = 100
    rpn_batch_size_per_image: int = 128  # anchors sampled per image for the RPN loss
    box_batch_size_per_image: int = 64  # proposals sampled per image for the box head's loss
    representation_size: int = 256  # width of the box head's two-layer MLP (torchvision: 1024)
    roi_sampling_ratio: int = 2  # RoIAlign samples per bin side; its CPU backward pass costs in proportion


@dataclass
class InstanceSegmenterModelConfig(DetectorModelConfig):
    """A detector that also predicts a mask per box (Mask R-CNN)."""

    family: str = "instance_segmenter"
    mask_channels: int = 64  # channels of each mask-head conv (torchvision default: 256)
    mask_layers: int = 2  # conv layers of the mask head (torchvision default: 4)


@dataclass
class DecodeConfig:
    """How sequences are generated at evaluation and prediction time."""

    beam_size: int = 1  # 1: greedy
    max_len: int = 20  # tokens generated at most
    temperature: float = 1.0  # language-model sampling (mode=predict prompt=...)
    top_k: int = 0  # 0: sample from the whole vocabulary
    length_penalty: float = 0.0  # beam score = log-prob / length ** length_penalty


@dataclass
class DatasetConfig:
    name: str = MISSING
    root: Optional[str] = None  # folder of a real data set; ShapesWorld needs none
    image_size: int = 64
    batch_size: int = 64  # global: split across processes under DDP
    eval_batch_size: int = 256
    num_workers: int = 0
    val_fraction: float = 0.1
    seed: int = 0  # fixes the data (ShapesWorld scenes, split assignment), not the training
    num_train: int = 8000  # ShapesWorld sizes
    num_val: int = 1000
    num_test: int = 1000
    min_objects: int = 1
    max_objects: int = 4
    cache_dir: Optional[str] = None
    annotations: Optional[str] = None  # COCO-format json (captions) for image-folder data
    level: str = "word"  # language modeling: word | char
    seq_len: int = 32  # language modeling: tokens per training window
    min_freq: int = 1  # vocabulary: drop rarer tokens (they become <unk>)
    max_vocab: int = 0  # vocabulary: keep at most this many tokens (0: no limit)
    max_caption_len: int = 24  # captioning: tokens kept per caption
    image_dir: Optional[str] = None  # COCO: image folder ("{root}" and "{split}" are filled in)
    splits: dict[str, str] = field(default_factory=lambda: {"train": "train", "val": "val", "test": "test"})
    classes: Optional[list[str]] = None  # the class list expected of the annotations (checked before training)
    verify: bool = False  # decode every image file once before training and list all unreadable ones (image files only)


@dataclass
class LossConfig:
    name: str = MISSING
    label_smoothing: float = 0.0
    ignore_index: int = 255  # segmentation: pixels with this label count in no loss or score
    dice_weight: float = 0.0  # segmentation: loss = cross-entropy + dice_weight * Dice


@dataclass
class OptimizerConfig:
    name: str = MISSING  # adamw | adam | sgd | rmsprop
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd, rmsprop
    nesterov: bool = False
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8


@dataclass
class SchedulerConfig:
    name: str = MISSING  # none | cosine | linear | step | onecycle
    warmup_steps: int = 0
    warmup_fraction: float = 0.0  # of all optimizer steps; the larger of the two wins
    min_lr_ratio: float = 0.0  # cosine/linear end at lr * min_lr_ratio
    step_every: int = 1000  # step: decay every N optimizer steps
    gamma: float = 0.1


@dataclass
class TrainerConfig:
    epochs: int = 10
    max_steps: int = 0  # > 0: stop after this many optimizer steps, whatever the epochs
    val_every: int = 1  # evaluate every N epochs ...
    val_every_steps: int = 0  # ... or, when > 0, every N optimizer steps
    grad_accum: int = 1
    clip_grad_norm: float = 0.0  # 0 disables clipping
    precision: Precision = Precision.auto
    channels_last: bool = False
    compile: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    devices: int = 1  # > 1: DistributedDataParallel over this many processes
    dist_backend: str = "auto"  # auto (nccl on CUDA, gloo on CPU) | nccl | gloo
    deterministic: bool = False
    ema_decay: float = 0.0  # > 0 keeps an exponential moving average of the weights
    log_every: int = 50  # optimizer steps between progress lines
    progress: Progress = Progress.auto
    num_threads: int = 0  # torch CPU threads; 0 keeps torch's default
    save_last: bool = True
    nonfinite_patience: int = 0  # optimizer steps with a NaN/inf loss skipped in a row before stopping (0: stop at once)
    slurm_requeue: bool = True  # on SIGUSR1/SIGUSR2 under SLURM: save, then requeue the job (it resumes by itself)


@dataclass
class LoggerConfig:
    tensorboard: bool = False
    images: bool = True  # write image outputs (confusion matrices, samples, ...)
    max_images: int = 16


@dataclass
class PathsConfig:
    output_dir: str = "outputs"


@dataclass
class CvtrainConfig:
    """The root of every composed config."""

    task: TaskConfig = field(default_factory=TaskConfig)
    model: Any = MISSING  # a family schema, chosen by the model file
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    mode: Mode = Mode.train
    seed: int = 42
    ckpt: Optional[str] = None  # checkpoint for mode=eval|predict
    input: Optional[str] = None  # glob of inputs for mode=predict
    split: str = "test"  # the split mode=eval scores
    prompt: Optional[str] = None  # language modeling: text to continue in mode=predict
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    resume: Any = False  # true: continue the latest run of this task and model; or a run folder
    debug: bool = False  # show tracebacks


MODEL_SCHEMAS = {
    "classifier": ClassifierModelConfig,
    "recurrent": RecurrentModelConfig,
    "segmenter": SegmenterModelConfig,
    "detector": DetectorModelConfig,
    "instance_segmenter": InstanceSegmenterModelConfig,
}


def register() -> None:
    """Put the schemas in Hydra's ConfigStore, where the YAML files' defaults find them."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="cvtrain_schema", node=CvtrainConfig)
    for family, schema in MODEL_SCHEMAS.items():
        store.store(group="model", name=f"_{family}", node=schema)
