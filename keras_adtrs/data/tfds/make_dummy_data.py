"""Writes the builders' `dummy_data/` folders: tiny synthetic images in each release's layout.

The pixels are generated (gradients and noise from a fixed seed), so no
copyrighted image is copied. Run from anywhere:

```
python -m keras_adtrs.data.tfds.make_dummy_data
```
"""

import csv
import io
import os
import shutil
import zipfile

import numpy as np
import scipy.io
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
WIDTH, HEIGHT = 40, 32


def _pixels(seed, channels=3):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = np.stack([(x * 6 + seed * 17) % 256, (y * 8 + seed * 29) % 256, ((x + y) * 3 + seed * 41) % 256], -1)
    image = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    return image if channels == 3 else image[..., 0]


def _save(path, seed, fmt, mode="RGB"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if mode == "I;16":
        image = Image.fromarray(_pixels(seed, 1).astype(np.uint16) * 257)
    elif mode == "CMYK":
        image = Image.fromarray(_pixels(seed)).convert("CMYK")
    elif mode == "L":
        image = Image.fromarray(_pixels(seed, 1))
    else:
        image = Image.fromarray(_pixels(seed))
    image.save(path, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))


def _fresh(name):
    root = os.path.join(HERE, name, "dummy_data")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    return root


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        f.write(text)


def write_xlsx(path, sheet_name, rows):
    """A minimal one-sheet .xlsx (inline strings and numbers)."""

    def cell(ref, value):
        if isinstance(value, (int, float)):
            return f'<c r="{ref}"><v>{value}</v></c>'
        return f'<c r="{ref}" t="inlineStr"><is><t>{value}</t></is></c>'

    body = "".join(
        f'<row r="{i + 1}">' + "".join(cell(f"{chr(65 + j)}{i + 1}", v) for j, v in enumerate(row)) + "</row>"
        for i, row in enumerate(rows)
    )
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    pkg = "http://schemas.openxmlformats.org/package/2006/relationships"
    files = {
        "[Content_Types].xml": (
            '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
            "</Types>"
        ),
        "_rels/.rels": (
            f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{pkg}">'
            f'<Relationship Id="rId1" Type="{rel}/officeDocument" Target="xl/workbook.xml"/></Relationships>'
        ),
        "xl/workbook.xml": (
            f'<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="{main}" xmlns:r="{rel}"><sheets>'
            f'<sheet name="{sheet_name}" sheetId="1" r:id="rId1"/></sheets></workbook>'
        ),
        "xl/_rels/workbook.xml.rels": (
            f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{pkg}">'
            f'<Relationship Id="rId1" Type="{rel}/worksheet" Target="worksheets/sheet1.xml"/></Relationships>'
        ),
        "xl/worksheets/sheet1.xml": (
            f'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="{main}"><sheetData>{body}</sheetData></worksheet>'
        ),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in files.items():
            z.writestr(name, text)
    with open(path, "wb") as f:
        f.write(buffer.getvalue())


def make_live_iqa():
    """LIVE release 2: 982 .mat entries (all but 5 flagged `orgs`), 5 distorted BMPs."""
    root = _fresh("live_iqa")
    folders = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))
    refs = ["parrots.bmp", "buildings.bmp"]
    for k, ref in enumerate(refs):
        _save(os.path.join(root, "refimgs", ref), 100 + k, "BMP")
    dmos, orgs, std, refnames = [], [], [], []
    seed = 0
    for f, (folder, count) in enumerate(folders):
        info = []
        for k in range(1, count + 1):
            keep = k == f + 1  # one distorted image per folder: img1 in jp2k, img2 in jpeg, ...
            ref = refs[f % 2] if keep else refs[k % 2]
            dmos.append(20.0 + 10 * f + k if keep else 0.0)
            orgs.append(0 if keep else 1)
            std.append(5.0 + f if keep else 0.0)
            refnames.append(ref)
            info.append(f"{ref} img{k}.bmp {0.5 * (f + 1):.4f}")
            if keep:
                _save(os.path.join(root, folder, f"img{k}.bmp"), seed, "BMP")
                seed += 1
        _write(os.path.join(root, folder, "info.txt"), "\n".join(info[: f + 2]) + "\n")
    scipy.io.savemat(
        os.path.join(root, "dmos_realigned.mat"),
        {"dmos_new": np.array([dmos]), "orgs": np.array([orgs], dtype=np.uint8), "dmos_std": np.array([std])},
        do_compression=True,
    )
    cell = np.empty((1, len(refnames)), dtype=object)
    cell[0, :] = refnames
    scipy.io.savemat(os.path.join(root, "refnames_all.mat"), {"refnames_all": cell}, do_compression=True)


def make_csiq():
    """CSIQ: 2 references, 4 distorted PNGs, labels in csiq.DMOS.xlsx."""
    root = _fresh("csiq")
    for k, ref in enumerate(["1600", "cactus"]):
        _save(os.path.join(root, "src_imgs", f"{ref}.png"), 200 + k, "PNG")
    entries = [
        ("1600", "noise", "awgn", "AWGN", 1, 0.061),
        ("1600", "jpeg 2000", "jpeg2000", "jpeg2000", 3, 0.402),
        ("cactus", "blur", "blur", "BLUR", 2, 0.233),
        ("cactus", "f noise", "fnoise", "fnoise", 5, 0.512),
    ]
    rows = [["image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"]]
    for k, (ref, dst_type, folder, token, level, dmos) in enumerate(entries):
        _save(os.path.join(root, "dst_imgs", folder, f"{ref}.{token}.{level}.png"), 210 + k, "PNG")
        rows.append([int(ref) if ref.isdigit() else ref, k + 1, dst_type, level, 0.05, dmos])
    write_xlsx(os.path.join(root, "csiq.DMOS.xlsx"), "all_by_image", rows)


def make_tid2013():
    """TID2013: 2 references, 4 distorted BMPs (one with upper-case name on disk)."""
    root = _fresh("tid2013")
    _save(os.path.join(root, "reference_images", "I01.BMP"), 300, "BMP")
    _save(os.path.join(root, "reference_images", "i02.bmp"), 301, "BMP")
    names = ["i01_01_1.bmp", "i01_10_3.bmp", "i02_08_5.bmp", "i02_24_2.bmp"]
    on_disk = ["i01_01_1.bmp", "i01_10_3.bmp", "I02_08_5.BMP", "i02_24_2.bmp"]
    for k, name in enumerate(on_disk):
        _save(os.path.join(root, "distorted_images", name), 310 + k, "BMP")
    mos = [5.51429, 4.1, 2.25, 6.0]
    _write(os.path.join(root, "mos_with_names.txt"), "".join(f"{m} {n}\n" for m, n in zip(mos, names)))
    _write(os.path.join(root, "mos_std.txt"), "".join(f"{s}\n" for s in [0.13, 0.2, 0.31, 0.11]))


def make_kadid10k():
    """KADID-10k (inside a `kadid10k/` subfolder): 2 references, 4 distorted PNGs (one 16-bit gray)."""
    root = os.path.join(_fresh("kadid10k"), "kadid10k")
    for k in (1, 2):
        _save(os.path.join(root, "images", f"I{k:02d}.png"), 400 + k, "PNG")
    rows = [("I01_01_01.png", 4.57, 0.2), ("I01_25_05.png", 1.9, 0.5), ("I02_10_03.png", 3.1, 0.3), ("I02_16_02.png", 3.8, 0.25)]
    for k, (name, _, _) in enumerate(rows):
        _save(os.path.join(root, "images", name), 410 + k, "PNG", mode="I;16" if k == 1 else "RGB")
    lines = ["dist_img,ref_img,dmos,var"] + [f"{n},{n[:3]}.png,{d},{v}" for n, d, v in rows]
    _write(os.path.join(root, "dmos.csv"), "\n".join(lines) + "\n")


def make_live_challenge():
    """LIVE-C: 7 training images + 4 test images (JPEG and BMP), .mat files as released."""
    root = _fresh("live_challenge")
    names = [f"t{k}.bmp" for k in range(1, 8)] + ["103.bmp", "1001.JPG", "1002.JPG", "534.JPG"]
    for k, name in enumerate(names):
        folder = os.path.join(root, "Images", "trainingImages") if k < 7 else os.path.join(root, "Images")
        _save(os.path.join(folder, name), 500 + k, "BMP" if name.endswith(".bmp") else "JPEG")
    cell = np.empty((len(names), 1), dtype=object)
    for k, name in enumerate(names):
        cell[k, 0] = np.array([name])
    rng = np.random.default_rng(5)
    data = os.path.join(root, "Data")
    os.makedirs(data)
    scipy.io.savemat(os.path.join(data, "AllImages_release.mat"), {"AllImages_release": cell})
    scipy.io.savemat(os.path.join(data, "AllMOS_release.mat"), {"AllMOS_release": rng.uniform(5, 95, (1, len(names)))})
    scipy.io.savemat(os.path.join(data, "AllStdDev_release.mat"), {"AllStdDev_release": rng.uniform(10, 25, (1, len(names)))})


def make_koniq10k():
    """KonIQ-10k: 5 JPEGs in 1024x768/ (one CMYK), scores CSV and the official-sets CSV."""
    root = _fresh("koniq10k")
    names = ["10004473376.jpg", "10007357496.jpg", "10009096245.jpg", "10011347966.jpg", "10012362813.jpg"]
    sets = ["training", "training", "validation", "test", "training"]
    for k, name in enumerate(names):
        _save(os.path.join(root, "1024x768", name), 600 + k, "JPEG", mode="CMYK" if k == 4 else "RGB")
    header = ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "MOS_zscore"]
    with open(os.path.join(root, "koniq10k_scores_and_distributions.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for k, name in enumerate(names):
            w.writerow([name, 0, 10, 40, 50, 0, 100, 3.0 + 0.3 * k, 0.5, 60.0 + 5 * k])
    with open(os.path.join(root, "koniq10k_distributions_sets.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_name", "c1", "c2", "c3", "c4", "c5", "MOS", "SD", "set"])
        for k, name in enumerate(names):
            w.writerow([name, 0, 10, 40, 50, 0, 3.0 + 0.3 * k, 0.5, sets[k]])


def main():
    for make in (make_live_iqa, make_csiq, make_tid2013, make_kadid10k, make_live_challenge, make_koniq10k):
        make()
        print(make.__doc__.splitlines()[0])


if __name__ == "__main__":
    main()
