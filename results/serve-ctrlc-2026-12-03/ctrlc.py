"""A real `llm-srt serve` process on a tiny random model: 8 concurrent requests of 590 s of tones (the queue takes 6,
two get 503), SIGINT after WAIT seconds (a batch inside the model), and with SIGINTS=2 a second one 0.3 s later;
prints each request's outcome and the time from the first SIGINT to the process's exit. From the repository root:
    python results/serve-ctrlc-2026-12-03/ctrlc.py WORK PORT WAIT SIGINTS"""
import os, signal, subprocess, sys, threading, time, urllib.request
sys.path.insert(0, "tests/model"); sys.path.insert(0, "tests/serve")
import tiny
from serve_helpers import bursts, wav_bytes
from pathlib import Path

work = Path(sys.argv[1])
folder = work / "model" / "model"
if not (folder / "config.json").exists():
    folder = tiny.speech_llm_folder(work / "model")
port = sys.argv[2]
proc = subprocess.Popen([sys.executable, "-m", "llm_srt.cli", "serve", "--model", str(folder), "--port", port,
                         "--max-new-tokens", "256"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
lines = []
threading.Thread(target=lambda: [lines.append(l) for l in proc.stdout], daemon=True).start()
while not any("Uvicorn running" in l for l in lines):
    if proc.poll() is not None:
        sys.exit("serve ended before it listened:\n" + "".join(lines))
    time.sleep(0.1)
body = wav_bytes(bursts(590.0))
boundary = "xx"
part = f"--{boundary}\r\nContent-Disposition: form-data; name="
data = (f'{part}"file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n'.encode() + body
        + f'\r\n{part}"source_language"\r\n\r\neng\r\n--{boundary}--\r\n'.encode())
req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/audio/transcriptions", data=data,
                             headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
def call():
    t = time.perf_counter()
    try:
        urllib.request.urlopen(req, timeout=300).read()
        print(f"request answered in {time.perf_counter() - t:.1f} s")
    except Exception as e:
        body = getattr(e, "read", lambda: b"")()[:200]
        took = time.perf_counter() - t
        print(f"request ended: {type(e).__name__} {getattr(e, 'code', '')} {body!r} after {took:.1f} s")
for _ in range(8):
    threading.Thread(target=call, daemon=True).start()
time.sleep(float(sys.argv[3]))  # the batch is inside the model
t0 = time.perf_counter()
proc.send_signal(signal.SIGINT)
if sys.argv[4] == '2':
    time.sleep(0.3); proc.send_signal(signal.SIGINT)
rc = proc.wait(timeout=600)
print("".join(l for l in lines if "INFO" in l or "rror" in l)[-1500:])
print(f"exit code {rc}, {time.perf_counter() - t0:.2f} s after the first SIGINT")
