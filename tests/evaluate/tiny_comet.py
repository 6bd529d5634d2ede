"""Builds a tiny COMET regression metric with random weights (run in the COMET environment): OUT/encoder holds a
tiny XLM-R config and a word-level tokenizer, OUT/hparams.yaml and OUT/checkpoints/model.ckpt the metric."""
import sys
from pathlib import Path

import torch
import yaml
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import XLMRobertaConfig, XLMRobertaTokenizerFast
import pytorch_lightning as pl
from comet.models import RegressionMetric

out = Path(sys.argv[1])
encoder = out / "encoder"
encoder.mkdir(parents=True, exist_ok=True)
specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
words = "the a cat dog sat on mat house der die das haus katze le la chat maison el gato casa is was".split()
vocab = {w: i for i, w in enumerate(specials + words)}
tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
tok.normalizer = normalizers.Lowercase()
tok.pre_tokenizer = pre_tokenizers.Whitespace()
tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
XLMRobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                        cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                        model_max_length=512).save_pretrained(encoder)
XLMRobertaConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=32, max_position_embeddings=514, pad_token_id=1, bos_token_id=0,
                 eos_token_id=2).save_pretrained(encoder)
torch.manual_seed(0)
model = RegressionMetric(pretrained_model=str(encoder), load_pretrained_weights=False, hidden_sizes=[32, 16],
                         layer_transformation="sparsemax")
hparams = dict(model.hparams)
(out / "checkpoints").mkdir(exist_ok=True)
(out / "hparams.yaml").write_text(yaml.dump(hparams))
torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams,
            "pytorch-lightning_version": pl.__version__}, out / "checkpoints" / "model.ckpt")
print(out / "checkpoints" / "model.ckpt")
