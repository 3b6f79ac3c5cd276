"""``robot-rl view``: an episode as a video (mp4 or gif) and a PNG contact sheet.

    robot-rl view PATH [episode=N] [format=mp4|gif] [out=DIR] [fps=F]

The cameras of the episode side by side, upscaled ``scale`` times; the contact sheet shows
``sheet_frames`` frames spread over the episode. Files are named ``<store>_ep<N>.<format>``
and ``<store>_ep<N>_sheet.png``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from PIL import Image, ImageDraw

from robot_rl.data.store import EpisodeStore, StoreError


def episode_frames(store: EpisodeStore, episode: int, scale: int = 2) -> tuple[np.ndarray, list[str]]:
    """(T, H, W*cams, 3) uint8 frames with the cameras side by side, and the camera keys."""
    n = store.n_episodes
    if not 0 <= episode < n:
        raise StoreError(f"episode {episode} does not exist: {store.path} holds episodes 0..{n - 1}"
                         if n else f"{store.path} holds no episodes yet")
    cams = sorted(k for k, ks in store.schema.items() if ks.image)
    if not cams:
        raise StoreError(f"episode {episode} has no camera images (keys: {store.keys}); "
                         "record with cameras=[front,wrist] to view it")
    data = store.episode(episode, keys=cams)
    frames = np.concatenate([data[k][..., :3] if data[k].shape[-1] >= 3 else
                             np.repeat(data[k], 3, axis=-1) for k in cams], axis=2)
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    return frames, cams


def write_video(frames: np.ndarray, path: Path, fps: float) -> None:
    if path.suffix == ".gif":
        imgs = [Image.fromarray(f) for f in frames]
        imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=int(round(1000 / fps)), loop=0)
    else:
        import imageio.v2 as imageio
        h, w = frames.shape[1:3]
        if h % 2 or w % 2:  # libx264 wants even sizes
            frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
        imageio.mimwrite(path, list(frames), fps=fps, codec="libx264", quality=8, macro_block_size=1)


def contact_sheet(frames: np.ndarray, n: int, title: str, fps: float, cols: int = 4) -> Image.Image:
    idx = np.unique(np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int))
    h, w = frames.shape[1:3]
    rows = int(np.ceil(len(idx) / cols))
    label_h, head_h, pad = 14, 22, 4
    sheet = Image.new("RGB", (cols * (w + pad) + pad, head_h + rows * (h + label_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 5), title, fill="black")
    for j, i in enumerate(idx):
        r, c = divmod(j, cols)
        x, y = pad + c * (w + pad), head_h + r * (h + label_h + pad)
        sheet.paste(Image.fromarray(frames[i]), (x, y + label_h))
        draw.text((x, y), f"step {i}  t={i / fps:.2f}s", fill="black")
    return sheet


def view(path: str, cfg: DictConfig) -> list[Path]:
    fmt = str(cfg.format).lower()
    if fmt not in ("mp4", "gif"):
        raise StoreError(f"format must be 'mp4' or 'gif', got {cfg.format!r}")
    with EpisodeStore.open(path) as store:
        ep = int(cfg.episode)
        frames, cams = episode_frames(store, ep, scale=int(cfg.scale))
        meta = store.episode_meta(ep)
        fps = float(cfg.fps or meta.get("fps") or store.spec.control_hz)
        out_dir = Path(cfg.out) if cfg.out else Path(path).resolve().parent
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = f"{Path(path).resolve().name.removesuffix('.zarr')}_ep{ep}"
        video = out_dir / f"{stem}.{fmt}"
        write_video(frames, video, fps)
        title = (f"{store.spec.name} / {meta.get('task')}  episode {ep}  "
                 f"{'success' if meta.get('success') else 'failure'}  {len(frames)} steps  "
                 f"cameras: {', '.join(c.removeprefix('image_') for c in cams)}")
        sheet = out_dir / f"{stem}_sheet.png"
        contact_sheet(frames, int(cfg.sheet_frames), title, fps).save(sheet)
    return [video, sheet]
