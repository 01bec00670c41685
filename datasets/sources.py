"""Where each dataset's files come from, what they are checked against, and where they go in
CoOp's layout. Read by `prepare_datasets.py`; DATASETS.md documents the same table.

A resource is one downloaded file. `urls` are tried in order ("gdrive:<id>" goes through gdown);
a resource without URLs is manual: its `manual` text says how to get it, and a file of that
name placed in `<root>/.downloads/` is verified and installed like a download. `members` maps
paths inside an archive to paths under the dataset folder; a plain file goes to `target`.
md5 values are the published ones (the same that torchvision checks); files without one get
their sha256 and size recorded in `<root>/.downloads/manifest.json` on first download.
"""
from dataclasses import dataclass

GDRIVE = "gdrive:"


@dataclass(frozen=True)
class Resource:
    filename: str
    urls: tuple = ()
    md5: str = ""
    approx_size: str = ""
    members: tuple = ()  # ((path in the archive, path under the dataset folder), ...)
    target: str = ""  # plain file: path under the dataset folder (default: filename)
    inner: tuple = ()  # archives inside the archive to unpack in place (Caltech's zip holds a .tar.gz)
    optional: bool = False  # needed only by the fallback split; a failure is a note, not an error
    extractor: str = ""  # special installer (ImageNet's archives go through torchvision)
    provides_paths: tuple = ()  # overrides what counts as installed (default: the member/target paths)
    manual: str = ""

    def provides(self):
        return self.provides_paths or tuple(dst for _, dst in self.members) or (self.target or self.filename,)


@dataclass(frozen=True)
class Source:
    name: str
    folder: str
    anchor: str
    resources: tuple
    flatten: tuple = ()  # folders that mirrors nest in themselves (cars_train/cars_train/...)


def split_json(name, drive_id):
    return Resource(f"split_zhou_{name}.json", (GDRIVE + drive_id,), approx_size="1-10 MB")


CLASSNAMES = Resource("classnames.txt", (GDRIVE + "1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF",), approx_size="30 KB")

IMAGENET_MANUAL = """\
ImageNet needs an image-net.org account, so the archives cannot be fetched for you:
  1. Log in at https://image-net.org/download-images and download (ILSVRC2012)
       ILSVRC2012_img_train.tar (~138 GB), ILSVRC2012_img_val.tar (~6.3 GB), ILSVRC2012_devkit_t12.tar.gz (~2.5 MB)
  2. Put them in {downloads}/ and run this command again: it checks their md5, unpacks train/ into
     {dataset_dir}/images/train/<wnid>/ and sorts val/ into {dataset_dir}/images/val/<wnid>/
     with the devkit's labels (torchvision's ImageNet parsers; needs scipy).
  Already have ImageNet unpacked? Move or link it so that {dataset_dir}/images/train/<wnid>/ and
  {dataset_dir}/images/val/<wnid>/ exist (val must be in wnid folders, not flat)."""

SOURCES = {s.name: s for s in (
    Source("ImageNet", "imagenet", "imagenet", (
        CLASSNAMES,
        Resource("ILSVRC2012_devkit_t12.tar.gz", md5="fa75699e90414af021442c21a62c3abf", approx_size="2.5 MB",
                 extractor="keep", provides_paths=("images/val",), manual=IMAGENET_MANUAL),
        Resource("ILSVRC2012_img_train.tar", md5="1d675b47d978889d74fa0da5fadfb00e", approx_size="138 GB",
                 extractor="imagenet_train", target="images/train", manual=IMAGENET_MANUAL),
        Resource("ILSVRC2012_img_val.tar", md5="29b22e2961454d5413ddabcf34fc5622", approx_size="6.3 GB",
                 extractor="imagenet_val", target="images/val", manual=IMAGENET_MANUAL),
    )),
    Source("Caltech101", "caltech-101", "caltech101", (
        Resource("caltech-101.zip", ("https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip",),
                 md5="3138e1922a9193bfa496528edbbc45d0", approx_size="137 MB",
                 inner=("caltech-101/101_ObjectCategories.tar.gz",),
                 members=(("101_ObjectCategories", "101_ObjectCategories"),)),
        split_json("Caltech101", "1hyarUivQE36mY6jSomru6Fjd-JzwcCzN"),
    )),
    Source("OxfordPets", "oxford_pets", "oxfordpets", (
        Resource("images.tar.gz", ("https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz",),
                 md5="5c4f3ee8e5d25df40f4fd59a7f44e54c", approx_size="792 MB", members=(("images", "images"),)),
        Resource("annotations.tar.gz", ("https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz",),
                 md5="95a8c909bbe2e81eed6a22bccdf3f68f", approx_size="19 MB",
                 members=(("annotations", "annotations"),), optional=True),
        split_json("OxfordPets", "1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs"),
    )),
    Source("StanfordCars", "stanford_cars", "stanfordcars", (
        Resource("stanford_cars_images", provides_paths=("cars_train", "cars_test"), approx_size="1.9 GB", manual="""\
The Stanford hosts are gone (pytorch/vision#7545) and the remaining copies need a login:
  1. Download the Kaggle copy https://www.kaggle.com/datasets/jessicali9530/stanford-cars-dataset
     (or another copy of the original cars_train.tgz / cars_test.tgz) and extract it.
  2. Put the images so that {dataset_dir}/cars_train/00001.jpg and {dataset_dir}/cars_test/00001.jpg exist.
     The Kaggle copy nests them (cars_train/cars_train/); this command flattens that when run again."""),
        Resource("car_devkit.tgz", ("https://github.com/pytorch/vision/files/11644847/car_devkit.tgz",),
                 approx_size="330 KB", members=(("devkit", "devkit"),), optional=True),
        Resource("cars_test_annos_withlabels.mat", optional=True, approx_size="190 KB", manual="""\
Only the fallback split needs it (CoOp's split file does not). Its original host is gone; the copy
linked from https://github.com/pytorch/vision/issues/7545#issuecomment-1631441616 works. Save it as
{dataset_dir}/cars_test_annos_withlabels.mat."""),
        split_json("StanfordCars", "1ObCFbaAgVu0I-k_Au-gIUcefirdAuizT"),
    ), flatten=("cars_train", "cars_test")),
    Source("OxfordFlowers", "oxford_flowers", "oxfordflowers", (
        Resource("102flowers.tgz", ("https://www.robots.ox.ac.uk/~vgg/data/flowers/102/102flowers.tgz",),
                 md5="52808999861908f626f3c1f4e79d11fa", approx_size="330 MB", members=(("jpg", "jpg"),)),
        Resource("imagelabels.mat", ("https://www.robots.ox.ac.uk/~vgg/data/flowers/102/imagelabels.mat",),
                 md5="e0620be6f572b9609742df49c70aed4d", approx_size="0.5 KB", optional=True),
        Resource("cat_to_name.json", (GDRIVE + "1AkcxCXeK_RCGCEC_GvmWxjcjaNhu-at0",), approx_size="3 KB",
                 optional=True),
        split_json("OxfordFlowers", "1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT"),
    )),
    Source("Food101", "food-101", "food101", (
        Resource("food-101.tar.gz", ("http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz",),
                 md5="85eeb15f3717b99a5da872d97d918f87", approx_size="5.0 GB",
                 members=(("food-101/images", "images"), ("food-101/meta", "meta"))),
        split_json("Food101", "1QK0tGi096I0Ba6kggatX1ee6dJFIcEJl"),
    )),
    Source("FGVCAircraft", "fgvc_aircraft", "fgvcaircraft", (
        Resource("fgvc-aircraft-2013b.tar.gz",
                 ("https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",),
                 approx_size="2.8 GB", members=tuple(
                     (f"fgvc-aircraft-2013b/data/{f}", f) for f in (
                         "images", "variants.txt", "images_variant_train.txt", "images_variant_val.txt",
                         "images_variant_test.txt"))),
    )),
    Source("SUN397", "sun397", "sun397", (
        Resource("SUN397.tar.gz", ("http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz",),
                 md5="8ca2778205c41d23104230ba66911c7a", approx_size="37 GB", members=(("SUN397", "SUN397"),),
                 manual="""\
The Princeton host has been reported dead since 2025 (KaiyangZhou/CoOp#90, pytorch/vision#9348).
Find a mirror of the original archive, check it against md5 8ca2778205c41d23104230ba66911c7a, save it
as {downloads}/SUN397.tar.gz and run this command again. Re-split copies (e.g. Kaggle's
train/ and test/ folders) do not have CoOp's layout and do not match split_zhou_SUN397.json."""),
        Resource("Partitions.zip", ("https://vision.princeton.edu/projects/2010/SUN/download/Partitions.zip",),
                 approx_size="6 MB", optional=True, members=tuple(
                     (f, f) for f in ("ClassName.txt", "Training_01.txt", "Testing_01.txt"))),
        split_json("SUN397", "1y2RD81BYuiyvebdN-JymPfyWYcd8_MUq"),
    )),
    Source("DescribableTextures", "dtd", "dtd", (
        Resource("dtd-r1.0.1.tar.gz", ("https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",),
                 md5="fff73e5086ae6bdbea199a49dfb8a4c1", approx_size="625 MB",
                 members=(("dtd/images", "images"), ("dtd/labels", "labels"))),
        split_json("DescribableTextures", "1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x"),
    )),
    Source("EuroSAT", "eurosat", "eurosat", (
        Resource("EuroSAT.zip", (
            "https://huggingface.co/datasets/torchgeo/eurosat/resolve/"
            "c877bcd43f099cd0196738f714544e355477f3fd/EuroSAT.zip",
            "http://madm.dfki.de/files/sentinel/EuroSAT.zip"),
            md5="c8fa014336c82ac7804f0398fcb19387", approx_size="94 MB", members=(("2750", "2750"),)),
        split_json("EuroSAT", "1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o"),
    )),
    Source("UCF101", "ucf101", "ucf101", (
        Resource("UCF-101-midframes.zip", (GDRIVE + "10Jqome3vtUA2keJkNanAiFpgbyC9Hc2O",), approx_size="",
                 members=(("UCF-101-midframes", "UCF-101-midframes"),)),
        Resource("UCF101TrainTestSplits-RecognitionTask.zip",
                 ("https://www.crcv.ucf.edu/data/UCF101/UCF101TrainTestSplits-RecognitionTask.zip",),
                 approx_size="110 KB", optional=True, members=(("ucfTrainTestlist", "ucfTrainTestlist"),)),
        split_json("UCF101", "1I0S0q91hJfsV9Gf4xDIjgDq4AqBNJb1y"),
    )),
    Source("ImageNetV2", "imagenetv2", "imagenetv2", (
        Resource("imagenetv2-matched-frequency.tar.gz", (
            "https://s3-us-west-2.amazonaws.com/imagenetv2public/imagenetv2-matched-frequency.tar.gz",
            "https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main/imagenetv2-matched-frequency.tar.gz"),
            approx_size="1.2 GB", members=(("imagenetv2-matched-frequency-format-val",
                                            "imagenetv2-matched-frequency-format-val"),)),
        CLASSNAMES,
    )),
    Source("ImageNetSketch", "imagenet-sketch", "imagenetsketch", (
        Resource("ImageNet-Sketch.zip", (
            "https://huggingface.co/datasets/imagenet_sketch/resolve/main/data/ImageNet-Sketch.zip",
            GDRIVE + "1Mj0i5HBthqH1p_yeXzsg22gZduvgoNeA"),
            approx_size="8.4 GB", members=(("sketch", "images"),)),
        CLASSNAMES,
    )),
    Source("ImageNetA", "imagenet-adversarial", "imageneta", (
        Resource("imagenet-a.tar", ("https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar",),
                 approx_size="690 MB", members=(("imagenet-a", "imagenet-a"),)),
        CLASSNAMES,
    )),
    Source("ImageNetR", "imagenet-rendition", "imagenetr", (
        Resource("imagenet-r.tar", ("https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar",),
                 approx_size="2.1 GB", members=(("imagenet-r", "imagenet-r"),)),
        CLASSNAMES,
    )),
)}
