"""`python -m cvtrain` (and `torchrun -m cvtrain`) run the same entry point as `cvtrain`."""

from cvtrain.cli import main

if __name__ == "__main__":
    main()
