"""Live recognition streams: a session's rolling audio buffer, voice activity, commit policy and decode steps.

Flow of one stream: raw PCM chunks -> `StreamResampler` (model rate) -> `RollingBuffer` and `SpeechDetector`
(Silero VAD splits the audio into utterances; silence is never decoded) -> while an utterance is open, its
window is re-decoded through the model's scheduler whenever enough new speech has arrived, and
`LocalAgreement` makes final the words two successive hypotheses agree on -> at the utterance's end (or the
client's half-close) one last decode makes the rest final. Committed audio is trimmed away, so memory and
per-step cost stay bounded however long the stream runs.
"""
