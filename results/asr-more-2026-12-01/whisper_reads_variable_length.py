"""Does the encoder output this project feeds the adapter (Whisper base at each clip's own length, no padding to
30 s) still carry the speech? Whisper base's own decoder reads it, greedy, on the 40 held-out-voice English clips:
    python results/asr-more-2026-12-01/whisper_reads_variable_length.py data/mini_voices/heldout.jsonl data/mini_voices
(WER with Whisper's English normalizer: padded to 30 s, at the clip's length, and at the clip's length with the
output cut at the reference's word count, as the decoder does not stop there: it repeats the sentence)."""
import json, sys, soundfile as sf, torch, jiwer
from llm_srt.embedded import ensure_embedded
from llm_srt.model.whisper_torch import TorchWhisper
from whisper_normalizer.english import EnglishTextNormalizer
norm = EnglishTextNormalizer()
p = ensure_embedded()
w = TorchWhisper.from_pretrained(p.whisper, torch.device('cpu'), torch.float32)
g = w.generation
prompt = torch.tensor([[g.start, g.lang_to_id['<|en|>'], g.task_to_id['transcribe'], g.no_timestamps]])
man, root = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(man)]
rows = [r for r in rows if r['src_lang'] == 'eng' and not r['tgt_lang']][:40]
refs, full, var = [], [], []
for r in rows:
    a, _ = sf.read(f"{root}/{r['audio']}", dtype='float32')
    mel = w.mel([a])
    n = (len(a) + 159) // 160
    n += n % 2
    with torch.no_grad():
        for mm, out in ((mel, full), (mel[:, :, :n], var)):
            ids = w.greedy(w.encode(mm), prompt, 100)
            out.append(norm(w.decode_text(ids.tolist())[0]))
    refs.append(norm(r['transcript']))
cut = [' '.join(v.split()[:len(r.split())]) for r, v in zip(refs, var)]
print('variable length, cut at the reference word count', round(100 * jiwer.wer(refs, cut), 1))
print(len(refs), 'WER padded 30 s', round(100 * jiwer.wer(refs, full), 1), 'variable length', round(100 * jiwer.wer(refs, var), 1))
for i in range(3): print(refs[i], '|', full[i], '|', var[i])
