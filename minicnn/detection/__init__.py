"""Object detection with minicnn's own layers: scenes, a grid detector's loss, NMS, mAP.

- :mod:`minicnn.data.scenes` (re-exported here): ``mnist-scenes`` and ``fashion-mnist-scenes``
  (several objects per canvas)
- :mod:`.boxes`: IoU, non-maximum suppression, clipping
- :mod:`.head`: the detector's loss (explicit backward) and decoding into boxes
- :mod:`.metric`: mean average precision (PASCAL VOC 2010+ all-point interpolation)
- :mod:`.evaluation`: a detector's loss and mAP@0.5 over a scene data set (the detection
  task, :mod:`minicnn.tasks.detection`, evaluates with it)
- :mod:`.inference`: detecting objects in image files of any size
"""

from .boxes import batched_nms, box_area, box_iou, clip_boxes, nms
from .head import DetectionLoss, decode, encode_targets
from .metric import average_precision, class_curves, mean_average_precision, precision_recall_at
from ..data.scenes import MAX_OBJECTS, SceneDataset, make_scenes

__all__ = ["DetectionLoss", "MAX_OBJECTS", "SceneDataset", "average_precision", "batched_nms",
           "box_area", "box_iou", "class_curves", "clip_boxes", "decode", "encode_targets",
           "make_scenes", "mean_average_precision", "nms", "precision_recall_at"]
