"""The library's typed errors (a base module: imports nothing of the package).

The library never exits the process and never names a command-line flag: it
raises these errors, naming the setting, file or value at fault. The
commands (`python -m keras_adtrs.train` and the others) catch `ADTRSError`
and print `error: ...` with the flag that sets the setting
(`command_message`), then exit with status 2.

- `SettingError`: a setting is out of range, or contradicts another one; its
  `setting` attribute is the setting's Python name (a field of
  `keras_adtrs.training.config.TrainConfig`, or an argument name), which the
  commands spell as a flag (`crop_size` -> `--crop-size`).
- `ResumeError`: a run folder's resume checkpoint cannot be used.
- `OutputDirError`: an output folder cannot be created or written.
- `DataSetError`: a data set cannot be loaded (a missing or malformed
  release, a bad scores file); the message names the set and the file.

Other modules define errors of their own concern on the same base:
`keras_adtrs.data.images.ImageReadError`,
`keras_adtrs.models.precision.UnsupportedPrecisionError`,
`keras_adtrs.serving.runtimes.ArtifactError`.

Example:
>>> try:
...     raise SettingError("crop_size", "must be a multiple of 32 from 64 to 512, got 100")
... except ADTRSError as error:
...     print(command_message(error))
--crop-size must be a multiple of 32 from 64 to 512, got 100
"""


class ADTRSError(Exception):
    """Base of every error the library raises on bad settings, input or state."""


class SettingError(ADTRSError, ValueError):
    """A setting is out of range or contradicts another; `setting` names it.

    Args:
        setting: str. The setting's Python name (`"crop_size"`).
        message: str. What is wrong, read after the setting's name
            (`"must be at least 1, got 0"`).
    """

    def __init__(self, setting, message):
        self.setting = str(setting)
        self.detail = str(message)
        super().__init__(f"{self.setting} {self.detail}")


class ResumeError(ADTRSError):
    """A run folder holds a resume checkpoint that this run cannot continue from."""


class OutputDirError(ADTRSError, OSError):
    """An output folder cannot be created or written; the message names it."""


class DataSetError(ADTRSError, ValueError):
    """A data set cannot be loaded; the message names the set and what is wrong."""


def flag_for(setting):
    """The command-line flag of a setting: `crop_size` -> `--crop-size`."""
    return "--" + str(setting).replace("_", "-")


def command_message(error):
    """The text a command prints for `error` (after `error: `): settings spelled as flags."""
    if isinstance(error, SettingError):
        return f"{flag_for(error.setting)} {error.detail}"
    return str(error)
