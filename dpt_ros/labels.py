"""ADE20K (SceneParsing, 150 classes) names and colour palette; label conventions.

Class index i (0..149) is line i+1 of the benchmark's objectInfo150 table
(CSAILVision/sceneparsing), so 0 = wall and 149 = flag; DPT's ADE20K head outputs logits in this
order.  Names are the short names MMSegmentation uses (without the stray trailing space of its
"bed "): the first synonym of each objectInfo150 entry, except index 89, "television receiver".
255 marks unknown/ignored pixels everywhere in dpt_ros.

The palette (RGB) is the SceneParsing visualisation table (color150) as reproduced by
MMSegmentation's ADE20KDataset.  It is not injective: road (6) and skyscraper (48) share
(140, 140, 140) in the original, and that is kept so colourised output matches other tools.
"""

import numpy as np

NUM_CLASSES = 150
IGNORE_LABEL = 255

# fmt: off
ADE20K_CLASSES: tuple[str, ...] = (
    'wall', 'building', 'sky', 'floor', 'tree',  # 0-4
    'ceiling', 'road', 'bed', 'windowpane', 'grass',  # 5-9
    'cabinet', 'sidewalk', 'person', 'earth', 'door',  # 10-14
    'table', 'mountain', 'plant', 'curtain', 'chair',  # 15-19
    'car', 'water', 'painting', 'sofa', 'shelf',  # 20-24
    'house', 'sea', 'mirror', 'rug', 'field',  # 25-29
    'armchair', 'seat', 'fence', 'desk', 'rock',  # 30-34
    'wardrobe', 'lamp', 'bathtub', 'railing', 'cushion',  # 35-39
    'base', 'box', 'column', 'signboard', 'chest of drawers',  # 40-44
    'counter', 'sand', 'sink', 'skyscraper', 'fireplace',  # 45-49
    'refrigerator', 'grandstand', 'path', 'stairs', 'runway',  # 50-54
    'case', 'pool table', 'pillow', 'screen door', 'stairway',  # 55-59
    'river', 'bridge', 'bookcase', 'blind', 'coffee table',  # 60-64
    'toilet', 'flower', 'book', 'hill', 'bench',  # 65-69
    'countertop', 'stove', 'palm', 'kitchen island', 'computer',  # 70-74
    'swivel chair', 'boat', 'bar', 'arcade machine', 'hovel',  # 75-79
    'bus', 'towel', 'light', 'truck', 'tower',  # 80-84
    'chandelier', 'awning', 'streetlight', 'booth', 'television receiver',  # 85-89
    'airplane', 'dirt track', 'apparel', 'pole', 'land',  # 90-94
    'bannister', 'escalator', 'ottoman', 'bottle', 'buffet',  # 95-99
    'poster', 'stage', 'van', 'ship', 'fountain',  # 100-104
    'conveyer belt', 'canopy', 'washer', 'plaything', 'swimming pool',  # 105-109
    'stool', 'barrel', 'basket', 'waterfall', 'tent',  # 110-114
    'bag', 'minibike', 'cradle', 'oven', 'ball',  # 115-119
    'food', 'step', 'tank', 'trade name', 'microwave',  # 120-124
    'pot', 'animal', 'bicycle', 'lake', 'dishwasher',  # 125-129
    'screen', 'blanket', 'sculpture', 'hood', 'sconce',  # 130-134
    'vase', 'traffic light', 'tray', 'ashcan', 'fan',  # 135-139
    'pier', 'crt screen', 'plate', 'monitor', 'bulletin board',  # 140-144
    'shower', 'radiator', 'glass', 'clock', 'flag',  # 145-149
)

_PALETTE_ROWS = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3),  # 0-4
    (120, 120, 80), (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7),  # 5-9
    (224, 5, 255), (235, 255, 7), (150, 5, 61), (120, 120, 70), (8, 255, 51),  # 10-14
    (255, 6, 82), (143, 255, 140), (204, 255, 4), (255, 51, 7), (204, 70, 3),  # 15-19
    (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255), (255, 7, 71),  # 20-24
    (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255),  # 25-29
    (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10),  # 30-34
    (7, 255, 255), (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7),  # 35-39
    (255, 122, 8), (0, 255, 20), (255, 8, 41), (255, 5, 153), (6, 51, 255),  # 40-44
    (235, 12, 255), (160, 150, 20), (0, 163, 255), (140, 140, 140), (250, 10, 15),  # 45-49
    (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0), (153, 255, 0),  # 50-54
    (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),  # 55-59
    (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112),  # 60-64
    (0, 255, 133), (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0),  # 65-69
    (0, 143, 255), (51, 255, 0), (0, 82, 255), (0, 255, 41), (0, 255, 173),  # 70-74
    (10, 0, 255), (173, 255, 0), (0, 255, 153), (255, 92, 0), (255, 0, 255),  # 75-79
    (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20), (255, 184, 184),  # 80-84
    (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194),  # 85-89
    (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255),  # 90-94
    (0, 122, 255), (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0),  # 95-99
    (143, 255, 0), (82, 0, 255), (163, 255, 0), (255, 235, 0), (8, 184, 170),  # 100-104
    (133, 0, 255), (0, 255, 92), (184, 0, 255), (255, 0, 31), (0, 184, 255),  # 105-109
    (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255), (112, 224, 255),  # 110-114
    (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163),  # 115-119
    (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235),  # 120-124
    (245, 0, 255), (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0),  # 125-129
    (0, 204, 255), (20, 0, 255), (255, 255, 0), (0, 153, 255), (0, 41, 255),  # 130-134
    (0, 255, 204), (41, 0, 255), (41, 255, 0), (173, 0, 255), (0, 245, 255),  # 135-139
    (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255), (184, 255, 0),  # 140-144
    (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255),  # 145-149
)
# fmt: on

ADE20K_PALETTE: np.ndarray = np.array(_PALETTE_ROWS, dtype=np.uint8)
ADE20K_PALETTE.flags.writeable = False  # shared module constant

#: The palette as 0x00RRGGBB integers, the form LabelInfo.colors carries.
ADE20K_COLORS_PACKED: np.ndarray = ((ADE20K_PALETTE[:, 0].astype(np.uint32) << 16)
                                    | (ADE20K_PALETTE[:, 1].astype(np.uint32) << 8)
                                    | ADE20K_PALETTE[:, 2].astype(np.uint32))
ADE20K_COLORS_PACKED.flags.writeable = False


def class_name(index: int) -> str:
    """Name of class ``index``; ``"unknown"`` for IGNORE_LABEL."""
    if index == IGNORE_LABEL:
        return "unknown"
    if not 0 <= index < NUM_CLASSES:
        raise ValueError(
            f"label {index} is outside 0..{NUM_CLASSES - 1} and is not {IGNORE_LABEL}")
    return ADE20K_CLASSES[index]
