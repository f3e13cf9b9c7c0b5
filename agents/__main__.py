from agents.main import app

if __name__ == "__main__":
    app.main()
