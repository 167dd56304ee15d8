"""A generated image folder for the loaders' tests, copied fresh for each test that changes it."""
import shutil

import pytest
from image_files import write_images


@pytest.fixture(scope="session")
def image_folder_template(tmp_path_factory):
    folder = tmp_path_factory.mktemp("template") / "shapes"
    known = write_images(folder)
    return folder, known


@pytest.fixture
def image_folder(image_folder_template, tmp_path):
    """A fresh copy of the generated folder (tests may change it) and its known colours."""
    template, known = image_folder_template
    folder = tmp_path / "shapes"
    shutil.copytree(template, folder, symlinks=True)
    return folder, known
