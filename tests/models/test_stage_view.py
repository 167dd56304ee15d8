"""The trainable stages of a cut backbone seen as the study CNN's blocks."""
import torch

from functions.models.registry import create_backbone
from functions.models.stage_view import StageView
from functions.train.adaptation import adapt_batch_norm
from functions.train.finetune import FineTuneNet, staged


def test_the_view_computes_the_networks_logits_from_the_frozen_stages_output():
    backbone = create_backbone("efficientnet_lite0", input_size=32)
    net = FineTuneNet(backbone, 3, frozen=6).eval()
    images = torch.rand(4, 3, 32, 32)
    inputs = staged(backbone, images, 6)
    view = StageView.of(net, 6).eval()
    assert len(view.blocks) == len(backbone.layer_names) - 6 + 1
    torch.testing.assert_close(view(inputs), net.from_stage(inputs, 6))
    # the last block is the pooling: the features after it are the vector the classifier reads
    assert view.features(inputs).shape == (4, 1280)
    torch.testing.assert_close(view.head(view.features(inputs)), view(inputs))


def test_adabn_through_the_view_changes_the_statistics_of_the_stages_after_the_cut_only():
    backbone = create_backbone("efficientnet_lite0", input_size=32)
    net = FineTuneNet(backbone, 3, frozen=6)
    before = {k: v.clone() for k, v in net.state_dict().items() if "running_mean" in k}
    inputs = staged(backbone, torch.rand(8, 3, 32, 32), 6)
    view = StageView.of(net, 6)
    adapt_batch_norm(view, inputs, len(view.blocks))
    after = {k: v for k, v in net.state_dict().items() if "running_mean" in k}  # the view shares the network's modules
    later = set(net.backbone.layer_names[6:])
    changed = {k.split(".")[2] for k in before if not torch.equal(before[k], after[k])}
    assert changed == later
