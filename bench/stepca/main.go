// Command step-ca runs smallstep's certificate authority from Debian's packaged sources, which
// ship the library but not its command. It only hands the arguments to the package's own start
// command, so the server measured is step-ca's, unchanged.
package main

import (
	"fmt"
	"os"

	"github.com/smallstep/certificates/commands"
	"github.com/urfave/cli"
)

func main() {
	app := cli.NewApp()
	app.Name = "step-ca"
	app.Usage = "step-ca <config.json>"
	app.Flags = commands.AppCommand.Flags
	app.Action = commands.AppCommand.Action
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "step-ca:", err)
		os.Exit(1)
	}
}
