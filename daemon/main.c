/* placeholder until the manager lands */
int main(void)
{
        return 0;
}
