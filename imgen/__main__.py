import sys

from imgen.torchrun import die_with_agent

die_with_agent()  # a torchrun worker: before the seconds of importing torch, in which its agent may be killed

from imgen.cli import main  # noqa: E402

sys.exit(main())
