from speechqe.cli import main

main()
