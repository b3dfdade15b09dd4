"""Structured-config schemas: the types and defaults every YAML file is checked against.

Hydra merges each YAML file onto these dataclasses, so a misspelt key or a value of
the wrong type fails while the config is composed, before any model is built. Model
schemas are per family (a classifier has no `cell`, a recurrent model no
`freeze_backbone`); each conf/model/*.yaml names its family's schema in its defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
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


class CaptionStyle(str, Enum):
    """ShapesWorld's captions: `varied`, five annotator-style sentences that each mention one
    or two properties (captioning's references); `detailed`, five that each name every
    object's size, colour and shape, so that a caption picks out its own scene (retrieval)."""

    varied = "varied"
    detailed = "detailed"


@dataclass
class TaskConfig:
    """What every task has. Each conf/task/*.yaml picks its own schema below (`- _detection@task`),
    so a key of another task (`task.coco_backend` in a classification run) is an unknown key."""

    name: str = MISSING
    schema: str = "base"  # the schema this node was typed by; a saved config is typed by it again
    module: Optional[str] = None  # a user's task: the Python module registering its class
    families: list[str] = field(default_factory=list)  # model families the task accepts
    monitor: str = MISSING  # metric that picks checkpoints/best.pt
    monitor_mode: str = "max"  # max | min
    metrics: list[str] = field(default_factory=list)


@dataclass
class ClassificationTaskConfig(TaskConfig):
    schema: str = "classification"
    topk: list[int] = field(default_factory=lambda: [1, 5])
    augment: bool = False  # random horizontal flips, on the device
    confusion_matrix: bool = True  # save a confusion-matrix image at each evaluation


@dataclass
class SegmentationTaskConfig(TaskConfig):
    schema: str = "segmentation"
    augment: bool = False  # flips image and mask together, on the device


@dataclass
class DetectionTaskConfig(TaskConfig):
    """Detection and instance segmentation (one task class scores both with COCOeval)."""

    schema: str = "detection"
    augment: bool = False  # random horizontal flips of images and their boxes
    coco_backend: str = "pycocotools"  # pycocotools | faster_coco_eval (same stats, faster)
    score_threshold: float = 0.5  # boxes drawn in images and printed by mode=predict


@dataclass
class SequenceTaskConfig(TaskConfig):
    """Captioning and language modeling: decoding is set in the root's `decode` section."""

    schema: str = "sequence"


@dataclass
class GANTaskConfig(TaskConfig):
    """Generative adversarial training (cvtrain/tasks/gan.py)."""

    schema: str = "gan"
    d_steps: int = 1  # discriminator steps per generator step (WGAN-GP: 5)
    epochs_per_phase: int = 2  # progan: epochs per resolution; the new stage fades in over the first half
    grid_size: int = 8  # the fixed-noise sample grid is grid_size x grid_size
    diff_augment: list[str] = field(default_factory=list)  # DiffAugment before D, reals and fakes alike: [color,translation,cutout]


@dataclass
class ColorizationTaskConfig(TaskConfig):
    """Colorization, L -> ab (cvtrain/tasks/colorization.py); the objective is the loss group's."""

    schema: str = "colorization"
    augment: bool = True  # random horizontal flips, on the device
    temperature: float = 0.38  # loss=ab_classes: the annealed mean's T (Zhang et al. 2016)


@dataclass
class TranslationTaskConfig(TaskConfig):
    """Image-to-image translation, pix2pix or CycleGAN (cvtrain/tasks/translation.py); each
    model's objective (its GAN loss and weights) is in model.*, as in the reference code."""

    schema: str = "translation"
    augment: bool = True  # random horizontal flips (a pair flips together), on the device
    fcn_score: bool = True  # ShapesWorld label|edges -> image: segment the outputs (the pix2pix paper's FCN-score)
    fcn_train_images: int = 4000  # the FCN-score's segmenter: ShapesWorld training images (part of its cache key)
    fcn_epochs: int = 3  # ... and epochs it is trained for, once, then cached


@dataclass
class Word2VecTaskConfig(TaskConfig):
    """Word vectors (cvtrain/tasks/word2vec.py); the rest of word2vec's settings: alpha is
    optimizer.lr, min_alpha is optimizer.lr * scheduler.min_lr_ratio (linear decay), and
    the architecture (dim, window, negative, hs) is in model.*."""

    schema: str = "word2vec"
    min_count: int = 5  # words seen fewer times are dropped from the corpus (gensim's min_count)
    sample: float = 1e-3  # sub-sampling threshold of frequent words (gensim's sample; 0: keep every word)
    ns_exponent: float = 0.75  # noise distribution: unigram counts to this power
    chunk_words: int = 2000  # corpus words per SGD update (one optimizer step); a batch is dataset.batch_size chunks
    punctuation: bool = False  # keep punctuation marks as words
    questions: Optional[str] = None  # an analogy file (questions-words format) scored as questions_acc
    pairs: Optional[str] = None  # a word-pairs file (WordSim353 format) scored as spearman
    restrict_vocab: int = 300000  # analogies and similarity: only the most frequent N words (gensim's default)
    words: Optional[list[str]] = None  # neighbour table and plot; default: the top_words most frequent
    top_words: int = 30
    neighbours: int = 8  # neighbours per word in the table


@dataclass
class RetrievalTaskConfig(TaskConfig):
    """Image-sentence retrieval in a joint space (cvtrain/tasks/retrieval.py)."""

    schema: str = "retrieval"
    recall_ks: list[int] = field(default_factory=lambda: [1, 5, 10])  # Recall@K of each direction
    top_k: int = 8  # mode=predict: images (query=) or sentences (input=) returned per query


@dataclass
class ClipTaskConfig(RetrievalTaskConfig):
    """CLIP contrastive pre-training (cvtrain/tasks/clip.py): retrieval, zero-shot and linear-probe scores."""

    schema: str = "clip"
    # Zero-shot prompts: each class name fills "{}"; a class's text embedding is the mean of its prompts'.
    templates: list[str] = field(default_factory=lambda: ["a photo of a {}."])
    zero_shot: bool = True  # score zero-shot accuracy on the data set's classification view, when it has one
    linear_probe: bool = True  # logistic regression on frozen image features, train -> eval split
    probe_samples: int = 2000  # training images of the linear probe (a seeded random subset of train)
    probe_weight_decay: float = 1e-3  # L2 penalty of the probe's logistic regression


@dataclass
class DiffusionTaskConfig(TaskConfig):
    """Denoising diffusion (cvtrain/tasks/diffusion.py): training, guidance and sampling.
    The process that defines what a network means (schedule, T, target) is model.*."""

    schema: str = "diffusion"
    p_uncond: float = 0.1  # class-conditional: labels dropped with this probability (classifier-free guidance)
    guidance: float = 3.0  # w of samples, predict and `fid`: eps_u + w (eps_c - eps_u); 0 unconditional, 1 conditional
    guidance_scales: list[float] = field(default_factory=lambda: [0.0, 1.0, 3.0])  # evaluation: fid_w<w>, class_acc_w<w>
    sampler: str = "ddim"  # samples and predict: ddim | ddpm (ancestral, all model.timesteps steps)
    sample_steps: int = 50  # DDIM steps of samples and predict
    eval_steps: int = 20  # DDIM steps of evaluation (few, so it stays cheap)
    eta: float = 0.0  # DDIM: 0 deterministic ... 1 ancestral-like noise
    eval_samples: int = 500  # evaluation: the first N images of the split, and as many samples per guidance scale
    grid_size: int = 4  # images/: a grid_size x grid_size grid per class
    trajectory: int = 8  # images/trajectory.png: x_t at this many t per row
    sr_aug_level: float = 0.0  # sr_ddpm sampling: noise level of the conditioning image, as a fraction of T


@dataclass
class VQATaskConfig(TaskConfig):
    """Visual question answering (cvtrain/tasks/vqa.py)."""

    schema: str = "vqa"
    num_answers: int = 1000  # K: the most frequent (normalised) training answers become the classes
    max_question_len: int = 16  # question tokens kept
    loss: str = "softmax"  # softmax: cross-entropy against the normalised soft scores | bce: per-class sigmoid


@dataclass
class SituationTaskConfig(TaskConfig):
    """Situation recognition, imSitu-style (cvtrain/tasks/situation.py)."""

    schema: str = "situation"
    noun_weight: float = 1.0  # loss = verb cross-entropy + noun_weight x mean role-noun cross-entropy
    top_verbs: int = 5  # verbs, each with its frame, kept per image (the top-5 scores need 5)


@dataclass
class ModelConfig:
    """What every model family's schema has."""

    # A user's model: the Python module (beside the config folder or the current directory)
    # whose `@MODELS.register` builder this file names; imported before the task is built.
    module: Optional[str] = None


@dataclass
class ClassifierModelConfig(ModelConfig):
    name: str = MISSING
    family: str = "classifier"
    weights: Optional[str] = None  # local file with pretrained weights; never downloaded
    freeze_backbone: bool = False
    dropout: float = 0.0
    width: int = 16  # base channels of the small CNN


@dataclass
class RecurrentModelConfig(ModelConfig):
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
class SegmenterModelConfig(ModelConfig):
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
class DetectorModelConfig(ModelConfig):
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
class GANModelConfig(ModelConfig):
    """A generator and a discriminator (gan task)."""

    name: str = MISSING  # mlp_gan | dcgan | progan
    family: str = "gan"
    latent_dim: int = 100  # size of the noise vector z
    width: int = 32  # dcgan: base channels (the paper's 64 is slow on a CPU); progan: channels at 4x4
    hidden_dim: int = 256  # mlp_gan: hidden units
    num_classes: int = 0  # > 0: class-conditional (the data set's class count wins when it has one)
    d_norm: str = "batch"  # dcgan's discriminator: batch | layer (for loss=wgan_gp, as its paper) | spectral | none
    d_classifier: bool = False  # conditional dcgan: D also classifies its input (AC-GAN; loss.class_weight)


@dataclass
class ImageToImageModelConfig(ModelConfig):
    """pix2pix's U-Net generator and PatchGAN discriminator (cvtrain/models/image_to_image.py)."""

    name: str = MISSING  # colorizer
    family: str = "colorizer"
    width: int = 32  # the generator's first channels (pix2pix's ngf, 64 in the paper), doubling to 8x
    depth: int = 5  # the U-Net's stride-2 stages: image sides must be multiples of 2**depth
    d_width: int = 32  # the discriminator's first channels (ndf)
    d_layers: int = 3  # PatchGAN stride layers: 3 gives 70x70 patches
    norm: str = "batch"  # batch | instance | none
    dropout: float = 0.0  # in the decoder's three stages below the innermost (pix2pix: 0.5)


@dataclass
class Pix2PixModelConfig(ImageToImageModelConfig):
    """pix2pix (Isola et al. 2017): the U-Net and the 70x70 PatchGAN, conditional on the input."""

    family: str = "pix2pix"
    dropout: float = 0.5  # the generator's only noise (the paper's)
    gan_loss: str = "non_saturating"  # the reference's gan_mode: non_saturating (vanilla) | lsgan | hinge
    l1_weight: float = 100.0  # loss_G = GAN + l1_weight x L1 (lambda_L1)


@dataclass
class CycleGANModelConfig(ModelConfig):
    """CycleGAN (Zhu et al. 2017): two ResNet generators and two PatchGANs (cvtrain/models/cyclegan.py)."""

    name: str = MISSING  # cyclegan
    family: str = "cyclegan"
    width: int = 32  # the generators' first channels (ngf; 64 in the paper)
    blocks: int = 6  # residual blocks: 6 (128 px in the paper) or 9 (256 px)
    d_width: int = 32  # the discriminators' first channels (ndf)
    d_layers: int = 3  # PatchGAN stride layers: 3 gives 70x70 patches
    norm: str = "instance"  # instance | batch | none
    gan_loss: str = "lsgan"  # lsgan (the paper's) | non_saturating | hinge
    cycle_weight: float = 10.0  # lambda of ||G_BA(G_AB(a)) - a||_1 and ||G_AB(G_BA(b)) - b||_1
    identity_weight: float = 0.5  # x cycle_weight: ||G_AB(b) - b||_1 and ||G_BA(a) - a||_1 (0: off)
    pool_size: int = 50  # the discriminators see fakes drawn from a history of this many (0: the newest only)


@dataclass
class DiffusionModelConfig(ModelConfig):
    """A denoising U-Net and the diffusion process that defines what it predicts."""

    name: str = MISSING  # ddpm | sr_ddpm
    family: str = "diffusion"
    width: int = 32  # base channels
    channel_mults: list[int] = field(default_factory=lambda: [1, 2, 2])  # channels per resolution (x width), halving it
    num_res_blocks: int = 1  # residual blocks per resolution on the way down (one more on the way up)
    attention_resolutions: list[int] = field(default_factory=lambda: [8])  # self-attention at these feature sizes
    heads: int = 4
    groups: int = 8  # GroupNorm groups
    dropout: float = 0.0
    class_conditional: bool = True  # with a labelled data set: label embedding + classifier-free guidance
    schedule: str = "linear"  # linear (1e-4 .. 0.02) | cosine
    timesteps: int = 1000  # T
    prediction: str = "eps"  # eps | v: what the network outputs
    loss_weighting: str = "simple"  # simple (Ho et al.'s unweighted MSE) | min_snr (Min-SNR-γ: faster convergence)
    snr_gamma: float = 5.0  # min_snr: the SNR above which steps stop gaining weight (the paper's 5)
    scale: int = 1  # sr_ddpm: upsampling factor; it trains on dataset.image_size * scale from image_size
    noise_aug: float = 0.0  # sr_ddpm: training noise augmentation of the low-res input, up to this fraction of T
    # sr_ddpm: generate (x_hr - bicubic(x_lr)) x residual_scale, not x_hr. Off here, so a checkpoint saved
    # before the key existed loads as it was trained; model=sr_ddpm's file turns it on.
    residual: bool = False
    residual_scale: float = 8.0  # the residual's std (ShapesWorld: 0.12 at 32 px) x 8: about the noise's 1


@dataclass
class WordVectorModelConfig(ModelConfig):
    """word2vec's two architectures: skipgram predicts each context word from the word,
    cbow the word from its averaged context."""

    name: str = MISSING  # skipgram | cbow
    family: str = "word_vectors"
    dim: int = 100  # vector size
    window: int = 5  # largest distance to a context word; each word draws its own window in 1..window
    negative: int = 5  # noise words per example (0: no negative sampling; then hs must be true)
    hs: bool = False  # hierarchical softmax over word2vec.c's Huffman tree (with negative > 0: both)
    cbow_mean: bool = True  # cbow: the mean of the context vectors (false: their sum)


@dataclass
class VSEModelConfig(ModelConfig):
    """A visual-semantic embedding (VSE++): a CNN and a GRU into one normalised space."""

    name: str = MISSING  # vse
    family: str = "vse"
    image_encoder: str = "cnn"  # cnn: the course's small CNN | resnet18 (torchvision)
    width: int = 32  # base channels of the small CNN
    backbone_weights: Optional[str] = None  # local torchvision weights for resnet18; never downloaded
    freeze_backbone: bool = False
    word_dim: int = 128  # word embedding size
    hidden_dim: int = 256  # GRU state size
    embed_dim: int = 256  # the joint space


@dataclass
class ClipModelConfig(ModelConfig):
    """CLIP: an image encoder and a causal text transformer, projected into one space."""

    name: str = MISSING  # clip
    family: str = "clip"
    image_encoder: str = "cnn"  # cnn: the course CNN | resnet: a small ResNet | vit: a small vision transformer
    width: int = 32  # cnn: base channels; resnet: channels of the last stage; vit: token width
    layers: int = 3  # resnet: residual stages; vit: transformer blocks
    heads: int = 4
    patch_size: int = 4  # vit
    text_width: int = 128
    text_layers: int = 3
    text_heads: int = 4
    context_length: int = 32  # text tokens at most (<bos> and <eot> included)
    embed_dim: int = 128  # the joint space


@dataclass
class VQAModelConfig(ModelConfig):
    """A CNN + LSTM question answerer (cvtrain/models/vqa.py)."""

    name: str = MISSING  # vqa_baseline | san
    family: str = "vqa"
    encoder: str = "cnn"  # the image encoder, a classifier model name
    encoder_weights: Optional[str] = None  # local weights file for the encoder; never downloaded
    freeze_encoder: bool = False
    encoder_width: int = 16  # base channels of the small CNN encoder
    encoder_grid: int = 4  # keep a grid x grid map of image features (where things are; SAN attends over it)
    embed_dim: int = 64  # word embedding size
    hidden_dim: int = 128  # LSTM state size
    num_layers: int = 1
    fused_dim: int = 256  # the common size of image and question features
    classifier_dim: int = 256  # vqa_baseline: hidden layer of the answer MLP
    attention_dim: int = 256  # san: size of the attention layers
    attention_layers: int = 2  # san: rounds of attention (the paper's 2)
    dropout: float = 0.0


@dataclass
class SituationModelConfig(ModelConfig):
    """A CNN with a verb classifier and a verb- and role-conditioned noun classifier."""

    name: str = MISSING  # situation_baseline
    family: str = "situation"
    encoder: str = "cnn"  # the image encoder, a classifier model name
    encoder_weights: Optional[str] = None  # local weights file for the encoder; never downloaded
    freeze_encoder: bool = False
    encoder_width: int = 16
    encoder_grid: int = 4  # keep a grid x grid map of features: which shape is nearest needs where
    hidden_dim: int = 512  # the noun classifier's hidden layers (and the verb and role embeddings)
    dropout: float = 0.0


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
    """What every data set has. Each conf/dataset/*.yaml picks one of the schemas below
    (`- _shapes`), so a key of another kind of data set is an unknown key there."""

    name: str = MISSING
    schema: str = "base"  # the schema this node was typed by; a saved config is typed by it again
    tasks: list[str] = field(default_factory=list)  # the tasks it feeds (what --help and the pre-check read)
    module: Optional[str] = None  # a user's data set: the Python module registering its builder
    root: Optional[str] = None  # folder (or file) of a real data set; ShapesWorld needs none
    image_size: int = 64
    batch_size: int = 64  # global: split across processes under DDP
    eval_batch_size: int = 256
    num_workers: int = 0
    seed: int = 0  # fixes the data (ShapesWorld scenes, split assignment), not the training
    # Sizes of a generated data set (ShapesWorld). Here, not in its schema, because task files
    # and shared test settings size the default data set whichever data set is picked; a data
    # set read from files ignores them.
    num_train: int = 8000
    num_val: int = 1000
    num_test: int = 1000
    # ShapesWorld's captions (varied | detailed, see CaptionStyle): here for the same reason,
    # retrieval's task file picks `detailed`; captions read from files are what they are.
    captions: CaptionStyle = CaptionStyle.varied


@dataclass
class ShapesDatasetConfig(DatasetConfig):
    """ShapesWorld feeds every task, so it has the text fields of language modeling and captioning."""

    schema: str = "shapes"
    min_objects: int = 1
    max_objects: int = 4
    cache_dir: Optional[str] = None
    level: str = "word"  # language modeling: word | char
    seq_len: int = 32  # language modeling: tokens per training window
    min_freq: int = 1  # vocabulary: drop rarer tokens (they become <unk>)
    max_vocab: int = 0  # vocabulary: keep at most this many tokens (0: no limit)
    max_caption_len: int = 24  # captioning: tokens kept per caption
    pairs: str = "labels"  # translation, pix2pix: labels (palette label map) | edges, against the rendered image
    direction: str = "AtoB"  # translation: AtoB (labels|edges -> image; flat -> striped) | BtoA


@dataclass
class TranslationDatasetConfig(DatasetConfig):
    """Image pairs (pix2pix layout) or two image domains (CycleGAN layout) under dataset.root."""

    schema: str = "translation"
    direction: str = "AtoB"  # AtoB | BtoA: which side is the input


@dataclass
class ImageClassesDatasetConfig(DatasetConfig):
    """Labelled images for classification (digits, MNIST, CIFAR-10, a folder of class folders)."""

    schema: str = "image_classes"
    val_fraction: float = 0.1  # held out of train when the data set has no val split
    verify: bool = False  # decode every image file once before training and list all unreadable ones


@dataclass
class TextDatasetConfig(DatasetConfig):
    """A plain-text corpus for language modeling."""

    schema: str = "text"
    level: str = "word"  # word | char
    seq_len: int = 32  # tokens per training window
    min_freq: int = 1  # vocabulary: drop rarer tokens (they become <unk>)
    max_vocab: int = 0  # vocabulary: keep at most this many tokens (0: no limit)


@dataclass
class CorpusDatasetConfig(DatasetConfig):
    """A text corpus that comes with a library (gensim's Lee corpus): no path, no keys."""

    schema: str = "corpus"


@dataclass
class CaptionsDatasetConfig(DatasetConfig):
    """Images and their captions (COCO captions format)."""

    schema: str = "captions"
    annotations: Optional[str] = None  # COCO-format captions json
    min_freq: int = 1
    max_vocab: int = 0
    max_caption_len: int = 24  # tokens kept per caption
    verify: bool = False


@dataclass
class VocDatasetConfig(DatasetConfig):
    """Images with masks or boxes in a split layout (Pascal VOC)."""

    schema: str = "voc"
    splits: dict[str, str] = field(default_factory=lambda: {"train": "train", "val": "val", "test": "test"})
    classes: Optional[list[str]] = None  # the class list expected of the annotations (checked before training)
    verify: bool = False


@dataclass
class CocoDatasetConfig(VocDatasetConfig):
    """A COCO instances json per split and its image folder."""

    schema: str = "coco"
    annotations: Optional[str] = None  # "{root}" and "{split}" are filled in
    image_dir: Optional[str] = None  # image folder ("{root}" and "{split}" are filled in)


@dataclass
class VQADatasetConfig(DatasetConfig):
    """The VQA v2 json layout: questions and annotations per split, COCO images."""

    schema: str = "vqa"
    questions: str = "{root}/v2_OpenEnded_mscoco_{split}_questions.json"  # "{root}" and "{split}" filled in
    annotations: str = "{root}/v2_mscoco_{split}_annotations.json"
    image_dir: str = "{root}/{split}"
    image_pattern: str = "COCO_{data_subtype}_{image_id:012d}.jpg"  # data_subtype: the questions json's
    splits: dict[str, str] = field(default_factory=lambda: {"train": "train2014", "val": "val2014", "test": "val2014"})
    verify: bool = False


@dataclass
class ImSituDatasetConfig(DatasetConfig):
    """The imSitu layout: train/dev/test json, imsitu_space.json and the image folder."""

    schema: str = "imsitu"
    annotations: str = "{root}/{split}.json"  # "{root}" and "{split}" filled in
    space: str = "{root}/imsitu_space.json"  # verbs with their roles, nouns
    image_dir: str = "{root}/resized_256"
    splits: dict[str, str] = field(default_factory=lambda: {"train": "train", "val": "dev", "test": "test"})
    verify: bool = False


@dataclass
class LossConfig:
    name: str = MISSING
    tasks: list[str] = field(default_factory=list)  # the tasks it feeds (what --help and the pre-check read)
    label_smoothing: float = 0.0
    ignore_index: int = 255  # segmentation: pixels with this label count in no loss or score
    dice_weight: float = 0.0  # segmentation: loss = cross-entropy + dice_weight * Dice
    gp_weight: float = 10.0  # gan, wgan_gp: weight of the gradient penalty (Gulrajani et al.'s lambda)
    class_weight: float = 1.0  # gan with model.d_classifier: weight of the auxiliary classification loss (AC-GAN)
    g_class_weight: Optional[float] = None  # gan with model.d_classifier: G's class term's weight (null: class_weight)
    margin: float = 0.2  # retrieval, vse_hinge: the hinge's margin (VSE++)
    max_violation: bool = True  # retrieval, vse_hinge: hardest negative only (VSE++); false: sum over all (VSE0)
    warmup_epochs: int = 1  # retrieval, vse_hinge: epochs summing over all negatives before the hardest alone
    temperature: float = 0.05  # retrieval, infonce: similarities are divided by it
    l1_weight: float = 100.0  # colorization, cgan: loss_G = GAN + l1_weight x L1 (pix2pix's lambda)
    bin_size: float = 10.0  # colorization, ab_classes: side of the ab bins
    rebalance: float = 0.5  # colorization, ab_classes: lambda mixing the smoothed prior with uniform


@dataclass
class OptimizerConfig:
    """The optimizer of every parameter group a task names (see NamedOptimizerConfig)."""

    name: str = MISSING  # adamw | adam | sgd | rmsprop | adagrad | sparse_adam
    lr: float = 1e-3
    weight_decay: float = 0.0
    weight_decay_1d: bool = True  # false: no decay on biases, norm scales and other 1-D parameters (nanoGPT, CLIP)
    momentum: float = 0.9  # sgd, rmsprop
    nesterov: bool = False
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8


@dataclass
class NamedOptimizerConfig:
    """optimizers.<name>.*: what one of a task's optimizers sets differently from
    optimizer.* (unset keys inherit), e.g. optimizers.discriminator.lr=4e-4, or
    optimizers.embeddings.name=sparse_adam for word2vec's sparse embeddings."""

    name: Optional[str] = None
    lr: Optional[float] = None
    weight_decay: Optional[float] = None
    weight_decay_1d: Optional[bool] = None
    momentum: Optional[float] = None
    nesterov: Optional[bool] = None
    betas: Optional[list[float]] = None
    eps: Optional[float] = None


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
    precision: Precision = Precision.auto  # auto: bf16 on a CUDA GPU that has it, else fp32; bf16 also on a CPU
    channels_last: bool = False
    compile: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    devices: int = 1  # > 1: DistributedDataParallel over this many processes (per node)
    nodes: int = 1  # machines; > 1: run the same command on each, with the same rdzv_endpoint and hydra.run.dir
    rdzv_endpoint: str = ""  # HOST:PORT where nodes meet (c10d); empty: a free local port, MASTER_ADDR:PORT for nodes>1
    max_restarts: int = 0  # restarts of the worker group after a worker fails; each resumes from last.pt
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

    task: Any = MISSING  # a task schema, chosen by the task file
    model: Any = MISSING  # a family schema, chosen by the model file
    dataset: Any = MISSING  # a data-set schema, chosen by the data set's file
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    optimizers: dict[str, NamedOptimizerConfig] = field(default_factory=dict)  # per optimizer name, over optimizer.*
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    mode: Mode = Mode.train
    seed: int = 42
    ckpt: Any = None  # mode=eval|predict: a path, or several ({base: A.pt, upsampler: B.pt}; the first is primary)
    input: Optional[str] = None  # glob of inputs for mode=predict
    split: str = "test"  # the split mode=eval scores
    prompt: Optional[str] = None  # language modeling: text to continue in mode=predict
    query: Optional[str] = None  # retrieval / clip, mode=predict: a sentence whose best images are returned
    question: Optional[str] = None  # vqa, mode=predict: the question asked about every input image
    labels: Any = None  # clip, mode=predict: class names to rank per input image, labels=[circle,square] or labels='"circle,square"'
    num_samples: int = 64  # generative tasks, mode=predict: images to write
    # and `class` (see root_schema): mode=predict, a conditional generator's class
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    resume: Any = False  # true: continue the latest run of this task and model; or a run folder
    debug: bool = False  # show tracebacks


MODEL_SCHEMAS = {
    "classifier": ClassifierModelConfig,
    "recurrent": RecurrentModelConfig,
    "segmenter": SegmenterModelConfig,
    "detector": DetectorModelConfig,
    "instance_segmenter": InstanceSegmenterModelConfig,
    "gan": GANModelConfig,
    "diffusion": DiffusionModelConfig,
    "word_vectors": WordVectorModelConfig,
    "colorizer": ImageToImageModelConfig,
    "pix2pix": Pix2PixModelConfig,
    "cyclegan": CycleGANModelConfig,
    "vse": VSEModelConfig,
    "clip": ClipModelConfig,
    "vqa": VQAModelConfig,
    "situation": SituationModelConfig,
}
TASK_SCHEMAS = {
    "base": TaskConfig,
    "classification": ClassificationTaskConfig,
    "segmentation": SegmentationTaskConfig,
    "detection": DetectionTaskConfig,
    "sequence": SequenceTaskConfig,
    "gan": GANTaskConfig,
    "colorization": ColorizationTaskConfig,
    "translation": TranslationTaskConfig,
    "diffusion": DiffusionTaskConfig,
    "word2vec": Word2VecTaskConfig,
    "retrieval": RetrievalTaskConfig,
    "clip": ClipTaskConfig,
    "vqa": VQATaskConfig,
    "situation": SituationTaskConfig,
}
DATASET_SCHEMAS = {
    "base": DatasetConfig,
    "shapes": ShapesDatasetConfig,
    "image_classes": ImageClassesDatasetConfig,
    "text": TextDatasetConfig,
    "corpus": CorpusDatasetConfig,
    "captions": CaptionsDatasetConfig,
    "voc": VocDatasetConfig,
    "coco": CocoDatasetConfig,
    "vqa": VQADatasetConfig,
    "imsitu": ImSituDatasetConfig,
    "translation": TranslationDatasetConfig,
}
# The schemas of the shipped files, for configs saved before sections named their schema.
_SAVED_BEFORE_SCHEMA_KEY = {
    "task": {
        "classification": "classification", "segmentation": "segmentation", "detection": "detection",
        "instance_segmentation": "detection", "captioning": "sequence", "language_modeling": "sequence",
    },
    "dataset": {
        "shapes": "shapes", "digits": "image_classes", "mnist": "image_classes", "cifar10": "image_classes",
        "image_folder": "image_classes", "text": "text", "coco_captions": "captions", "voc": "voc", "coco": "coco",
    },
}
# The sections typed per file, the table of their schemas, and the key naming the schema.
SECTION_SCHEMAS = {
    "task": (TASK_SCHEMAS, "schema"),
    "model": (MODEL_SCHEMAS, "family"),
    "dataset": (DATASET_SCHEMAS, "schema"),
}


def register() -> None:
    """Put the schemas in Hydra's ConfigStore, where the YAML files' defaults find them
    (`- _classifier` in a model file, `- _shapes` in a data set's, `- _detection@task` in a task's)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="cvtrain_schema", node=root_schema())
    for group, (schemas, _) in SECTION_SCHEMAS.items():
        for kind, schema in schemas.items():
            store.store(group=group, name=f"_{kind}", node=schema)


def typed_section(section: str, saved: Any) -> Any:
    """A saved config's task, model or data-set section typed again by the schema it names
    (its `schema`, or a model's `family`). Keys that schema lacks are dropped: a saved config
    was written by cvtrain, and one written before the schemas were split per family holds
    every family's keys. An unnamed or unknown schema types it by the base (for a model, not
    at all: the families share no base worth checking against)."""
    from omegaconf import OmegaConf

    schemas, key = SECTION_SCHEMAS[section]
    node = OmegaConf.create(saved)
    kind = node.get(key) or _SAVED_BEFORE_SCHEMA_KEY.get(section, {}).get(str(node.get("name")), "base")
    schema = schemas.get(str(kind))
    if schema is None:
        return node
    known = {f.name for f in fields(schema)}
    kept = {k: v for k, v in OmegaConf.to_container(node).items() if k in known}
    return OmegaConf.merge(OmegaConf.structured(schema), kept)


def root_schema() -> Any:
    """The root schema as a config node: CvtrainConfig's fields and `class` (mode=predict:
    the class a conditional generator draws, `class=circle`), a Python keyword that no
    dataclass field can be named."""
    from omegaconf import OmegaConf, open_dict

    node = OmegaConf.structured(CvtrainConfig)
    with open_dict(node):
        node["class"] = None
    return node


def typed_config(saved: Any) -> Any:
    """A whole saved config typed by the root schema, its per-file sections by their own."""
    from omegaconf import OmegaConf

    node = OmegaConf.create(saved)
    sections = {s: typed_section(s, node[s]) for s in SECTION_SCHEMAS if node.get(s) is not None}
    rest = {k: v for k, v in OmegaConf.to_container(node).items() if k not in sections}
    cfg = OmegaConf.merge(root_schema(), rest)
    for section, typed in sections.items():
        cfg[section] = typed
    return cfg
