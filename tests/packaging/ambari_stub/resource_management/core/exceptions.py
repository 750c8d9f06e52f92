class Fail(Exception):
    pass


class ExecutionFailed(Fail):
    def __init__(self, message, code, out):
        Fail.__init__(self, message)
        self.code = code
        self.out = out


class ComponentIsNotRunning(Fail):
    pass


class ClientComponentHasNoStatus(Fail):
    pass
