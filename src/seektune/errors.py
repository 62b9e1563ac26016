"""Errors a user can act on. The CLI prints their message without a traceback."""


class SeektuneError(Exception):
    """Base class: the message says what went wrong and what to do next."""


class ConfigError(SeektuneError):
    pass


class ModelSourceError(SeektuneError):
    pass


class TemplateError(SeektuneError):
    pass


class DataError(SeektuneError):
    """A problem in one record: names the file, the record (index and line) and the field."""

    def __init__(self, file, record, field, problem, line=None, column=None):
        self.file, self.record, self.field, self.problem = str(file), record, field, problem
        self.line, self.column = line, column
        where = self.file
        if line is not None:
            where += f":{line}" + (f":{column}" if column is not None else "")
        rec = f" record {record}" if record is not None else ""
        fld = f" field `{field}`" if field else ""
        where = f"{where}:{rec}{fld}" if rec or fld else where
        super().__init__(f"{where}: {problem}")
